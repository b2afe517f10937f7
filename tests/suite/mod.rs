mod audit;
mod auth;
mod bin;
mod blobkit;
mod blobs;
mod cli;
mod cli_check;
mod cli_demo;
mod cli_errors;
mod cli_federation;
mod cli_init;
mod cli_interrupt;
pub mod cli_json;
mod cli_ops;
mod cli_p12;
mod cli_users;
mod clock_skew;
mod cluster;
mod crashes;
mod deploy_files;
mod disk_full;
mod evidence;
mod federation;
mod grants;
mod hostile;
mod indexes;
mod layers;
mod matrix;
mod memory;
mod netfault;
mod ops_metrics;
mod peer_rejections;
mod peers;
mod records;
mod relay;
#[cfg(feature = "s3")]
mod s3nodes;
#[cfg(feature = "s3")]
mod s3server;
#[cfg(feature = "s3")]
mod s3store;
mod webkit;

pub mod scripted;
mod search;
mod subjects;
