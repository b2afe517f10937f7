//! Memory bounds of attachments. The two nodes run as `casemesh serve`
//! processes of their own, with the binary's allocator and options, so each
//! node's peak is its own and nothing the test or another test allocates
//! counts.

use std::time::Duration;

use super::blobkit::*;
use super::cluster::{TestCluster, proc_kib};

/// How much either node may grow through the file, in MiB: the issue's
/// target for a 1 GiB file, held here for 256 MiB.
///
/// Since files live outside sled (staged, then in the blob store) the
/// growth is a few MiB whatever the file's size: `cargo bench --bench
/// replication -- --only blobs` measured 6–9 MiB through 1 GiB (release
/// build). With the bytes in sled, in 2 KiB chunks, each node grew by
/// 83–111 MiB, and with 256 KiB chunks by the whole file; the bound
/// catches both.
const BOUND_MIB: u64 = 32;

/// A 256 MiB file goes up, comes back, and reaches a granted peer
/// byte-identical, while neither node grows by more than [`BOUND_MIB`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_256_mib_attachment_round_trips_and_replicates_in_bounded_memory() {
    const SIZE: u64 = 256 * MIB;
    let mut c = TestCluster::start_processes(&["phila-da", "minn-da"]).await;
    c.pin_all().await;
    c.grant_collection(0, 1, "case-7").await;
    let pids: Vec<String> = c.nodes.iter().map(|n| n.pid()).collect();
    let before: Vec<u64> = pids
        .iter()
        .map(|pid| {
            // Resets the peak to what the process holds now. Should the
            // kernel refuse, the peak since start-up counts instead, which
            // can only overstate the growth.
            let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
            proc_kib(pid, "VmRSS:")
        })
        .collect();

    let info = upload(&c.nodes[0], "bodycam", SIZE).await.expect("upload");
    let expected = hash_of("bodycam", SIZE);
    assert_eq!((info.hash.to_vec(), info.size), (expected.clone(), SIZE));
    let id = put_with(
        &c.nodes[0],
        "case-7",
        vec![attachment(&info, "bodycam.mp4")],
    )
    .await;
    let mut local = c.nodes[0].records().await;
    assert_eq!(
        download(&mut local, &info.hash).await.unwrap(),
        (expected.clone(), SIZE)
    );
    wait_present(&c.nodes[1], &id, Duration::from_secs(300)).await;
    let mut remote = c.nodes[1].records().await;
    assert_eq!(
        download(&mut remote, &info.hash).await.unwrap(),
        (expected, SIZE)
    );
    assert_eq!(status(&c.nodes[1]).await.blob_bytes, SIZE);

    let growth: Vec<u64> = pids
        .iter()
        .zip(before)
        .map(|(pid, before)| proc_kib(pid, "VmHWM:").saturating_sub(before) / 1024)
        .collect();
    for (node, growth_mib) in c.nodes.iter().zip(&growth) {
        eprintln!(
            "{}: peak memory growth through a {} MiB file: {growth_mib} MiB",
            node.office,
            SIZE / MIB
        );
    }
    for (node, &growth_mib) in c.nodes.iter().zip(&growth) {
        assert!(
            growth_mib <= BOUND_MIB,
            "{} grew by {growth_mib} MiB for a {} MiB file (bound {BOUND_MIB} MiB)",
            node.office,
            SIZE / MIB
        );
    }
    c.stop_all().await;
}
