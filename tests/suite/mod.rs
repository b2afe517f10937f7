mod auth;
mod cli;
mod cluster;
mod federation;
mod peers;
mod records;
