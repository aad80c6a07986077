//! The umbrella package.
