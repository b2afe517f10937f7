mod auth;
mod cli;
mod cluster;
mod records;
