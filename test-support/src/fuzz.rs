//! Fuzzing that runs as a plain test: a parser of outside input is called with inputs mutated
//! from a few valid seeds (bit flips, random bytes, inserted tokens, cut and duplicated spans,
//! splices of two seeds), and must neither panic nor hang. No coverage feedback: what it finds
//! is what structure-aware mutation of real inputs reaches, on stable Rust, in every `cargo
//! test`.
//!
//! `MESH_FUZZ_ITERATIONS` sets the number of executions (default [`DEFAULT_ITERATIONS`], for CI);
//! `MESH_FUZZ_SEED` the generator's seed (default fixed, so a run is repeatable). A panic is
//! reported with the target, the iteration, the seed and the input, then re-raised.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

/// Executions per target in an ordinary test run.
pub const DEFAULT_ITERATIONS: u64 = 20_000;

/// Bytes that matter to the formats we parse: YAML and JSON punctuation, protobuf varints,
/// PEM and URL delimiters.
const TOKENS: &[&[u8]] = &[
    b":",
    b"-",
    b"---\n",
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"'",
    b"\n",
    b" ",
    b"*",
    b"&a",
    b"*a",
    b"!!binary",
    b"null",
    b"~",
    b"1e999",
    b"-1",
    b"0",
    b"65536",
    b"\0",
    b"\xff",
    b"\x80",
    b"\xff\xff\xff\xff\x0f",
    b"/",
    b"//",
    b"%",
    b"[::1]",
    b"spiffe://",
    b"-----BEGIN ",
    b"=",
];

/// A small, fast, deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

/// One to four mutations of a seed.
fn mutate(rng: &mut Rng, seeds: &[&[u8]]) -> Vec<u8> {
    let mut input = seeds[rng.below(seeds.len())].to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(input.len() + 1);
        match rng.below(8) {
            0 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] ^= 1 << rng.below(8);
            }
            1 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] = rng.next() as u8;
            }
            2 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                input.splice(at..at, token.iter().copied());
            }
            3 if !input.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(input.len());
                input.drain(at.min(end)..end);
            }
            4 if !input.is_empty() => {
                let start = rng.below(input.len());
                let end = (start + 1 + rng.below(32)).min(input.len());
                let span = input[start..end].to_vec();
                input.splice(at..at, span);
            }
            5 => input.truncate(at),
            6 => {
                let other = seeds[rng.below(seeds.len())];
                let from = rng.below(other.len() + 1);
                input.truncate(at);
                input.extend_from_slice(&other[from..]);
            }
            _ => {
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                input.splice(at..at, bytes);
            }
        }
    }
    input
}

/// Runs `target` on the seeds, then on mutated inputs; returns the number of executions.
pub fn fuzz(name: &str, seeds: &[&[u8]], mut target: impl FnMut(&[u8])) -> u64 {
    assert!(!seeds.is_empty(), "fuzz {name}: no seeds");
    let iterations = env_u64("MESH_FUZZ_ITERATIONS").unwrap_or(DEFAULT_ITERATIONS);
    let seed = env_u64("MESH_FUZZ_SEED").unwrap_or(0x6d65_7368_2d66_757a) | 1;
    let mut rng = Rng(seed);
    let started = std::time::Instant::now();
    for i in 0..iterations + seeds.len() as u64 {
        let input = match seeds.get(i as usize) {
            Some(s) => s.to_vec(),
            None => mutate(&mut rng, seeds),
        };
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| target(&input))) {
            eprintln!(
                "fuzz {name}: panic at iteration {i} (MESH_FUZZ_SEED={seed:#x}) on input {:?}",
                String::from_utf8_lossy(&input)
            );
            resume_unwind(panic);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "fuzz {name}: {iterations} executions in {secs:.1} s ({:.0}/s), seed {seed:#x}, no panic",
        iterations as f64 / secs.max(1e-9)
    );
    iterations
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_stay_near_their_seeds_and_are_repeatable() {
        let seeds: &[&[u8]] = &[b"apiVersion: v1\nkind: Pod\n", b"{\"a\": [1, 2]}"];
        let mut a = Rng(7);
        let mut b = Rng(7);
        let first: Vec<Vec<u8>> = (0..100).map(|_| mutate(&mut a, seeds)).collect();
        let again: Vec<Vec<u8>> = (0..100).map(|_| mutate(&mut b, seeds)).collect();
        assert_eq!(first, again);
        assert!(first
            .iter()
            .any(|m| m.as_slice() != seeds[0] && m.as_slice() != seeds[1]));
    }

    #[test]
    fn a_panicking_target_is_reported_and_re_raised() {
        let caught = catch_unwind(|| {
            fuzz("always-panics", &[b"x"], |input| {
                assert!(input.is_empty(), "boom");
            })
        });
        assert!(caught.is_err());
    }
}
