//! Choosing the libtorch device from a config string.

use tch::Device;

/// A device request as written by the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// CUDA device 0 when CUDA is usable, else the CPU.
    Auto,
    Cpu,
    Cuda(usize),
}

/// Parse "auto", "cpu", "cuda" or "cuda:N".
pub fn parse_device(s: &str) -> Result<DeviceSpec, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "auto" => Ok(DeviceSpec::Auto),
        "cpu" => Ok(DeviceSpec::Cpu),
        "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Ok(DeviceSpec::Cuda(n)),
            _ => Err(format!(
                "unknown device {s:?}; expected \"auto\", \"cpu\", \"cuda\" or \"cuda:N\""
            )),
        },
    }
}

/// Turn a request into a usable device, or explain why it is not available.
pub fn resolve(spec: DeviceSpec) -> Result<Device, String> {
    match spec {
        DeviceSpec::Auto => Ok(if tch::Cuda::is_available() {
            Device::Cuda(0)
        } else {
            Device::Cpu
        }),
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Cuda(n) => {
            if !tch::Cuda::is_available() {
                Err("CUDA was requested but libtorch sees no CUDA device (use device = \"auto\" or \"cpu\")".into())
            } else if n >= tch::Cuda::device_count() as usize {
                Err(format!(
                    "cuda:{n} requested but only {} CUDA device(s) are visible",
                    tch::Cuda::device_count()
                ))
            } else {
                Ok(Device::Cuda(n))
            }
        }
    }
}

/// Human-readable device name for logs and metadata.
pub fn describe(device: Device) -> String {
    match device {
        Device::Cpu => format!("cpu ({} threads)", tch::get_num_threads()),
        Device::Cuda(n) => format!("cuda:{n}"),
        other => format!("{other:?}"),
    }
}

/// The hardware behind `device`: the GPU's name (nvidia-smi), or the CPU's
/// model name (/proc/cpuinfo); "cuda:N" or "cpu" when neither says. Compiled
/// kernels are specific to it (src/compile.rs keys packages by it).
pub fn hardware_name(device: Device) -> String {
    match device {
        Device::Cuda(i) => std::process::Command::new("nvidia-smi")
            .args(["--query-gpu=name", "--format=csv,noheader"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .nth(i)
                    .map(|l| l.trim().to_string())
            })
            .unwrap_or_else(|| format!("cuda:{i}")),
        _ => std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_string())
            })
            .unwrap_or_else(|| "cpu".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_forms() {
        assert_eq!(parse_device("auto"), Ok(DeviceSpec::Auto));
        assert_eq!(parse_device("CPU"), Ok(DeviceSpec::Cpu));
        assert_eq!(parse_device("cuda"), Ok(DeviceSpec::Cuda(0)));
        assert_eq!(parse_device("cuda:3"), Ok(DeviceSpec::Cuda(3)));
        assert!(parse_device("tpu").is_err());
        assert!(parse_device("cuda:x").is_err());
    }
}
