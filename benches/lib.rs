//! criterion benchmarks live beside this file.
