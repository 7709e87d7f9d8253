# The preamble every benches/gpu_*.sh script sources: the repository root
# (ROOT, also the working directory), libtorch from the machine's torch
# wheel on the library path, unbuffered Python, and gpu_info FILE, which
# writes the GPU's name, driver and memory there (and says it).
#
#   . "$(dirname "$0")/gpu_env.sh"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export LD_LIBRARY_PATH=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__)+"/lib")')${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PYTHONUNBUFFERED=1

gpu_info() {
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$1" || true
  echo "GPU: $(cat "$1")"
}
