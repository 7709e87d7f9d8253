//! A counter-based random number generator evaluated with tensor ops on the
//! device.
//!
//! Why not torch's generator: its state is global to the process (tests running
//! in parallel threads would share it), it differs between CPU and CUDA, and
//! tch exposes no way to save and restore it. Here every random number is a
//! pure function of (seed, draw counter, element index), like Philox/Threefry
//! in JAX: the generator's whole state is two integers, any member draws the
//! same stream whether it runs alone or in a batch of thousands, and a
//! continued run reproduces an uninterrupted one exactly.
//!
//! The element hash is Chris Wellons' `lowbias32` variant with multipliers
//! below 2^31, so every product of a 32-bit value and a multiplier fits in a
//! signed 64-bit integer (torch has no unsigned 64-bit arithmetic).

use tch::{Kind, Tensor};

const MASK32: i64 = 0xffff_ffff;

/// 64-bit mixing function (SplitMix64 finaliser) for host-side key derivation.
pub fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// 32-bit integer hash applied element-wise to values in [0, 2^32).
fn hash32(x: &Tensor) -> Tensor {
    let x = x.bitwise_xor_tensor(&x.bitwise_right_shift_tensor_scalar(16));
    let x = (x * 0x21f0_aaad_i64).bitwise_and(MASK32);
    let x = x.bitwise_xor_tensor(&x.bitwise_right_shift_tensor_scalar(15));
    let x = (x * 0x735a_2d97_i64).bitwise_and(MASK32);
    x.bitwise_xor_tensor(&x.bitwise_right_shift_tensor_scalar(15))
}

/// Seeded stream of Gaussian numbers; state = (seed, counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterRng {
    pub seed: u64,
    /// Number of draws made so far.
    pub counter: u64,
}

impl CounterRng {
    pub fn new(seed: u64) -> Self {
        CounterRng { seed, counter: 0 }
    }

    /// Three 32-bit keys for draw number `counter`.
    pub fn keys(&self, counter: u64) -> [i64; 3] {
        let base = splitmix64(self.seed ^ splitmix64(counter));
        let k2 = splitmix64(base);
        [
            (base & 0xffff_ffff) as i64,
            (base >> 32) as i64,
            (k2 & 0xffff_ffff) as i64,
        ]
    }

    /// Standard normal numbers, one per element of `index` (int64, any shape,
    /// values ≥ 0 and unique within the draw), as float64. Advances the counter.
    pub fn normal(&mut self, index: &Tensor) -> Tensor {
        let [k1, k2, k3] = self.keys(self.counter);
        self.counter += 1;
        gaussian(index, [Key::Host(k1), Key::Host(k2), Key::Host(k3)])
    }

    /// The numbers of several draws at once: `keys` is [M, 3] int64 on
    /// the device, row m the keys of one draw ([`CounterRng::keys`]);
    /// returns [M, ...index shape], row m exactly what [`CounterRng::normal`]
    /// gives for that draw. One batched evaluation (the same elementwise
    /// kernels as one draw, on M times the elements). Does not touch any
    /// counter: the caller keeps the keys and the counter in step.
    pub fn normal_block(index: &Tensor, keys: &Tensor) -> Tensor {
        let m = keys.size()[0];
        let mut shape = vec![m];
        shape.extend(std::iter::repeat_n(1, index.dim()));
        let key = |i: i64| Key::Device(keys.select(1, i).view(shape.as_slice()));
        gaussian(index, [key(0), key(1), key(2)])
    }
}

/// A 32-bit key: a host constant or a device tensor (one per draw,
/// broadcast over the elements).
enum Key {
    Host(i64),
    Device(Tensor),
}

impl Key {
    fn xor(&self, x: &Tensor) -> Tensor {
        match self {
            Key::Host(k) => x.bitwise_xor(*k),
            Key::Device(k) => x.bitwise_xor_tensor(k),
        }
    }
}

fn gaussian(index: &Tensor, [k1, k2, k3]: [Key; 3]) -> Tensor {
    let low = k1.xor(&index.bitwise_and(MASK32));
    let high = index.bitwise_right_shift_tensor_scalar(32);
    let a = hash32(&low);
    let b = hash32(&k2.xor(&a.bitwise_xor_tensor(&high)));
    let c = hash32(&k3.xor(&b));
    // Uniforms strictly inside (0, 1): (x + 0.5) / 2^32.
    let scale = 1.0 / 4_294_967_296.0;
    let u1 = (b.to_kind(Kind::Double) + 0.5) * scale;
    let u2 = (c.to_kind(Kind::Double) + 0.5) * scale;
    (u1.log() * -2.0).sqrt() * (u2 * (2.0 * std::f64::consts::PI)).cos()
}

/// Host-side uniform random numbers (SplitMix64 stream) for decisions made
/// on the host, such as replica-exchange swaps. Its state is one integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostRng {
    pub state: u64,
}

impl HostRng {
    pub fn new(seed: u64) -> Self {
        HostRng {
            state: splitmix64(seed),
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, n) (n > 0), by rejection, so without modulo bias.
    pub fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next_u64();
            if x < zone {
                return (x % n) as usize;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64 from state 0: the published reference outputs (Vigna).
    #[test]
    fn splitmix64_gives_the_reference_outputs() {
        assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
        let mut h = HostRng { state: 0 };
        assert_eq!(h.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(h.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(h.next_u64(), 0x06c4_5d18_8009_454f);
    }

    /// The Gaussian stream is a fixed function of (seed, draw, index): a
    /// change to it would break continuing checkpoints written by earlier
    /// versions and reproducing published runs. Values from a separate
    /// transcription of the definition (keys, hash32, Box-Muller) in Python,
    /// for seed 2026, draws 0 and 1, indices 0, 1, 2 and 2³³ + 5.
    #[test]
    fn the_gaussian_stream_is_pinned() {
        let mut rng = CounterRng::new(2026);
        assert_eq!(rng.keys(0), [3_558_811_836, 2_056_357_199, 3_149_131_315]);
        assert_eq!(rng.keys(1), [2_232_973_217, 3_711_319_361, 3_283_812_293]);
        let idx = Tensor::from_slice(&[0i64, 1, 2, (1i64 << 33) + 5]);
        let expected = [
            [
                0.7140288035284817,
                0.5238258318377805,
                1.8052842389479395,
                0.7992713484457433,
            ],
            [
                -2.5974597934647687,
                1.260578037168852,
                0.6208300757980447,
                -1.818706357637679,
            ],
        ];
        for want in expected {
            let got = Vec::<f64>::try_from(rng.normal(&idx)).unwrap();
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-12 * w.abs(), "{g} vs {w}");
            }
        }
        assert_eq!(rng.counter, 2);
    }

    #[test]
    fn moments_are_standard_normal() {
        let n = 200_000;
        let mut rng = CounterRng::new(7);
        let idx = Tensor::arange(n, (Kind::Int64, tch::Device::Cpu));
        let z = rng.normal(&idx);
        let mean = z.mean(Kind::Double).double_value(&[]);
        let var = z.var(true).double_value(&[]);
        let m4 = z.pow_tensor_scalar(4).mean(Kind::Double).double_value(&[]);
        // Standard errors: mean 1/sqrt(n), variance sqrt(2/n), 4th moment sqrt(96/n).
        let nf = n as f64;
        assert!(mean.abs() < 6.0 / nf.sqrt(), "mean {mean}");
        assert!((var - 1.0).abs() < 6.0 * (2.0 / nf).sqrt(), "var {var}");
        assert!((m4 - 3.0).abs() < 6.0 * (96.0 / nf).sqrt(), "m4 {m4}");
    }

    #[test]
    fn draws_are_reproducible_and_independent() {
        let idx = Tensor::arange(1000, (Kind::Int64, tch::Device::Cpu));
        let mut a = CounterRng::new(1);
        let mut b = CounterRng::new(1);
        let a1 = a.normal(&idx);
        assert!(a1.equal(&b.normal(&idx)));
        let a2 = a.normal(&idx);
        // Successive draws and different seeds are uncorrelated.
        let corr = (&a1 * &a2).mean(Kind::Double).double_value(&[]);
        assert!(corr.abs() < 6.0 / (1000f64).sqrt(), "corr {corr}");
        let c1 = CounterRng::new(2).normal(&idx);
        let corr = (&a1 * &c1).mean(Kind::Double).double_value(&[]);
        assert!(corr.abs() < 6.0 / (1000f64).sqrt(), "corr {corr}");
        // A subset of indices draws exactly the values of the full draw.
        let sub = idx.narrow(0, 500, 10);
        assert!(CounterRng::new(1)
            .normal(&sub)
            .equal(&a1.narrow(0, 500, 10)));
    }

    /// A block of draws from device keys holds exactly the numbers of
    /// drawing one at a time.
    #[test]
    fn a_block_of_draws_holds_the_host_keyed_numbers() {
        let idx = Tensor::arange(3000, (Kind::Int64, tch::Device::Cpu)).view([1000, 3]);
        let mut rng = CounterRng::new(11);
        let keys: Vec<i64> = (5..9).flat_map(|c| rng.keys(c)).collect();
        let block = CounterRng::normal_block(&idx, &Tensor::from_slice(&keys).view([4, 3]));
        assert_eq!(block.size(), [4, 1000, 3]);
        rng.counter = 5;
        for m in 0..4 {
            assert!(block.get(m).equal(&rng.normal(&idx)), "draw {}", 5 + m);
        }
    }

    #[test]
    fn host_rng_is_uniform() {
        let mut rng = HostRng::new(5);
        let n = 100_000;
        let mean = (0..n).map(|_| rng.uniform()).sum::<f64>() / n as f64;
        // Uniform(0,1): standard deviation 1/sqrt(12).
        assert!(
            (mean - 0.5).abs() < 6.0 / (12.0 * n as f64).sqrt(),
            "mean {mean}"
        );
        let mut counts = [0usize; 5];
        for _ in 0..n {
            counts[rng.below(5)] += 1;
        }
        let expected = n as f64 / 5.0;
        let chi2: f64 = counts
            .iter()
            .map(|&c| (c as f64 - expected).powi(2) / expected)
            .sum();
        // 4 degrees of freedom: P(chi2 > 18.47) = 0.001.
        assert!(chi2 < 18.47, "chi2 {chi2} {counts:?}");
    }

    /// `below` rejects exactly the draws at and above the largest multiple
    /// of n (the zone where `% n` would be biased), and returns the others
    /// modulo n. From state 0 the draws are the reference outputs of
    /// `splitmix64_gives_the_reference_outputs`. 3 divides 2^64 - 1, so
    /// nothing is rejected: 0xe220a8397b1dcdaf % 3 = 1. For n = 2^63 + 1 the
    /// first draw (≥ n) is rejected and the second (< n) returned as it is,
    /// after two draws.
    #[test]
    fn below_rejects_exactly_the_biased_zone() {
        let mut h = HostRng { state: 0 };
        assert_eq!(h.below(3), 1);
        let mut h = HostRng { state: 0 };
        assert_eq!(h.below((1usize << 63) + 1), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(h.state, 0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(2));
    }

    #[test]
    fn indices_beyond_32_bits_are_distinct() {
        let idx = Tensor::from_slice(&[5_i64, 5 + (1 << 32)]);
        let z = CounterRng::new(3).normal(&idx);
        let v: Vec<f64> = Vec::try_from(&z).unwrap();
        assert_ne!(v[0], v[1]);
    }
}
