//! The component selection engine (spec §8, §10).
