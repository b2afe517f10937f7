mod auth;
mod blobkit;
mod blobs;
mod cli;
mod cluster;
mod federation;
mod peers;
mod records;
