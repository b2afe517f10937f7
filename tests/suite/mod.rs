mod auth;
mod cli;
mod cluster;
mod federation;
mod records;
