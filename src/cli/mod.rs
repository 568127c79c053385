pub mod depot;
