//! Units and physical constants, in one place.
//!
//! Internal units are Å (length), fs (time), eV (energy), amu (mass) and K
//! (temperature). Velocities are Å/fs. The only non-trivial conversion is
//! between eV and amu·Å²/fs², needed wherever a force meets a mass.

/// Boltzmann constant in eV/K: k_B / e with both exact in SI since 2019
/// (CODATA 2018: 8.617 333 262... × 10⁻⁵).
pub const KB_EV_PER_K: f64 = 1.380_649e-23 / 1.602_176_634e-19;

/// 1 amu·Å²/fs² expressed in eV.
///
/// amu = 1.660 539 066 60e-27 kg, Å²/fs² = 1e10 m²/s², eV = 1.602 176 634e-19 J.
pub const AMU_A2_PER_FS2_IN_EV: f64 = 1.660_539_066_60e-27 * 1.0e10 / 1.602_176_634e-19;

/// Acceleration in Å/fs² produced by a force of 1 eV/Å on a mass of 1 amu.
pub const EV_PER_A_AMU_TO_A_PER_FS2: f64 = 1.0 / AMU_A2_PER_FS2_IN_EV;

/// 1 Hartree in eV.
pub const HARTREE_EV: f64 = 27.211_386_245_988;

/// 1 eV per molecule in kcal/mol: N_A·e J/mol (both exact since 2019) over
/// 4184 J per thermochemical kcal.
pub const EV_IN_KCAL_PER_MOL: f64 = 6.022_140_76e23 * 1.602_176_634e-19 / 4184.0;

/// 1 bar in eV/Å³: 10⁵ J/m³ = 10⁵ / e eV per 10³⁰ Å³.
pub const BAR_IN_EV_PER_A3: f64 = 1.0e5 / 1.602_176_634e-19 / 1.0e30;

/// A density of 1 amu/Å³ in g/cm³ (1 amu = 1.660 539 066 60e-24 g, 1 Å³ = 1e-24 cm³).
pub const AMU_PER_A3_IN_G_PER_CM3: f64 = 1.660_539_066_60;

/// Femtoseconds per nanosecond (for ns/day).
pub const FS_PER_NS: f64 = 1.0e6;

/// Friction given in 1/ps converted to 1/fs.
pub fn per_ps_to_per_fs(gamma_per_ps: f64) -> f64 {
    gamma_per_ps * 1.0e-3
}

/// kT in eV at temperature `t` kelvin.
pub fn kt(t: f64) -> f64 {
    KB_EV_PER_K * t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_matches_reference_value() {
        // DESIGN.md: 1 amu·Å²/fs² = 103.6427 eV.
        assert!((AMU_A2_PER_FS2_IN_EV - 103.6427).abs() < 1e-3);
        assert!((EV_PER_A_AMU_TO_A_PER_FS2 * AMU_A2_PER_FS2_IN_EV - 1.0).abs() < 1e-15);
    }
}
