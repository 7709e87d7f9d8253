#!/usr/bin/env bash
# Pack this machine's Open MPI (mpirun, orted, the MCA plugins, help files
# and the libraries they load, glibc and CUDA's excepted) into a bundle that
# runs from any directory with OPAL_PREFIX=DIR/usr, PATH=DIR/usr/bin and
# LD_LIBRARY_PATH=DIR/lib: for a GPU machine without MPI
# (benches/gpu_mpi.sh unpacks it).
#
#   bash benches/pack_openmpi.sh .device/ompi.tgz
set -euo pipefail
OUTFILE=$(realpath -m "${1:?usage: pack_openmpi.sh BUNDLE.tgz}")
MPILIB=/usr/lib/x86_64-linux-gnu/openmpi
[ -x /usr/bin/orterun ] && [ -d $MPILIB/lib ] || { echo "Open MPI (Debian's openmpi-bin) not found"; exit 1; }
D=$(mktemp -d)
mkdir -p "$D/lib" "$D/usr/bin" "$D/usr/lib/x86_64-linux-gnu/openmpi" "$D/usr/share" "$D/etc"
# Every library mpirun, orted, libmpi and the plugins load, by soname.
ldd /usr/bin/orterun /usr/bin/orted /usr/lib/x86_64-linux-gnu/libmpi.so.40 $MPILIB/lib/openmpi3/*.so 2> /dev/null |
  awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | sort -u |
  grep -v -E '^(libc|libm|libdl|libpthread|librt|libutil|libgcc_s|libstdc\+\+|libz|libuuid|libatomic|ld-linux)[.-]' |
  while read -r so path; do cp -L "$path" "$D/lib/$so"; done
cp -L /usr/bin/orterun /usr/bin/orted "$D/usr/bin/" && ln -s orterun "$D/usr/bin/mpirun"
cp -a $MPILIB/lib "$D/usr/lib/x86_64-linux-gnu/openmpi/"
rm -rf "$D/usr/lib/x86_64-linux-gnu/openmpi/lib/pkgconfig" "$D"/usr/lib/x86_64-linux-gnu/openmpi/lib/*.a
cp -a /usr/share/openmpi "$D/usr/share/" && cp -a /etc/openmpi "$D/etc/"
tar -czf "$OUTFILE" -C "$D" . && rm -rf "$D"
ls -la "$OUTFILE"
