# mlff-md: `make run` sets up, builds and runs the default example;
# `make test` sets up and runs every test. Both are idempotent.
SHELL := /bin/bash
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
BIN := target/release/mlff-md
RUN_CONFIG ?= configs/replica_exchange.toml
# `make run` is a short version of the config (2 ps, a few minutes on 2 CPU
# cores); run the config directly for its full length.
RUN_ARGS ?= --steps 4000
# ... and then reported (`mlff-md report`: open RUN_OUTPUT/report/index.html).
RUN_OUTPUT ?= out/replica_exchange
# Cargo features of the build and the tests: `mpi` runs a config across MPI
# ranks (`mpirun -np K mlff-md run ...`; Open MPI is installed by setup).
# FEATURES= builds without MPI.
FEATURES ?= mpi
CARGO_FEATURES := $(if $(FEATURES),--features $(FEATURES),)

# torch-sys asks the venv's python for libtorch; the bundled HDF5 needs its cmake.
export VIRTUAL_ENV := $(VENV)
export PATH := $(VENV)/bin:$(PATH)
export CMAKE := $(VENV)/bin/cmake
export LIBTORCH_USE_PYTORCH := 1

.PHONY: setup ani-models build run test validate models systems screen-library fmt lint clean mutants

setup: $(VENV)/.setup-done

$(VENV)/.setup-done: python/requirements.txt
	@command -v python3 >/dev/null || { echo "python3 is required"; exit 1; }
	@command -v c++ >/dev/null || { apt-get update -qq && apt-get install -y -qq g++ make; }
	# Open MPI and libclang (the mpi crate's bindings) for the `mpi` feature.
	{ command -v mpicc && ls /usr/lib/llvm-*/lib/libclang.so; } >/dev/null 2>&1 \
	  || { apt-get update -qq && apt-get install -y -qq --no-install-recommends libopenmpi-dev openmpi-bin libclang-dev; }
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r python/requirements.txt
	# torchani only to export/check the ANI models; its other dependencies are not needed.
	$(PY) -m pip install -q --disable-pip-version-check --no-deps torchani==2.9.0
	# torch_geometric (pure Python) for the model-wrapping example python/wrap_schnet_example.py;
	# --no-deps: of its dependencies only these are imported (aiohttp, pyparsing are not).
	$(PY) -m pip install -q --disable-pip-version-check --no-deps torch-geometric==2.8.1 \
	  xxhash==4.1.0 psutil==7.2.2 requests==2.34.2 urllib3==2.8.0 certifi==2026.10.19.post1 \
	  charset-normalizer==3.5.3
	# sevenn (SevenNet-0) only to export/check models/sevennet_0.pt; --no-deps: of its
	# dependencies only these are imported (matscipy, ninja, matplotlib are not).
	$(PY) -m pip install -q --disable-pip-version-check --no-deps sevenn==0.13.0 \
	  e3nn==0.6.0 opt-einsum==3.4.0 opt-einsum-fx==0.1.4 ase==3.29.0 braceexpand==0.1.7 \
	  scikit-learn==1.9.1 joblib==1.6.0 threadpoolctl==3.8.0 cloudpickle==3.1.2 \
	  narwhals==2.29.0 pandas==3.1.1 python-dateutil==4.0.0 six==1.17.0
	# Chromium renders the `mlff-md report` page in python/check_report.py
	# (that check is skipped, with a message, where it cannot be installed).
	command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; } \
	  || echo "chromium not installed: the report screenshot check will be skipped"
	touch $@

# The ANI models (models/ani1x.pt, ani1x_static.pt, ani1x_nl.pt, the ani1ccx
# ones and ani2xt_nl.pt) are not committed: exported from the NeuroChem weights
# (the first time ~20 s plus a 22 MB download) and, for ANI-2xt, from the Auto3D
# 2.3.1 wheel (a 50 MB download into .cache/auto3d), byte-reproducibly, and
# checked against models/SHA256SUMS.
# Files that already match are left alone, so later runs only hash them.
ani-models: setup
	PYTHONHASHSEED=0 $(PY) python/export_ani.py

build: setup ani-models
	cargo build --release $(CARGO_FEATURES)

run: build
	$(BIN) run $(RUN_CONFIG) --overwrite --output $(RUN_OUTPUT) $(RUN_ARGS)
	$(BIN) report $(RUN_OUTPUT)

# Configs sized for a GPU (their whole batch would take tens of GB on a CPU)
# are validated with one member; every other check still covers the config.
# configs/screen.toml is a screen's config, not a run's: it screens the
# reader-test records (one molecule is minimised) instead.
ONE_MEMBER_CONFIGS := configs/peptide_folding_water.toml configs/materials_nvt.toml configs/materials_npt.toml
SCREEN_CONFIGS := configs/screen.toml
validate: build
	for c in configs/*.toml; do \
	  case " $(SCREEN_CONFIGS) " in *" $$c "*) continue;; esac; \
	  case " $(ONE_MEMBER_CONFIGS) " in *" $$c "*) one=--one-member;; *) one=;; esac; \
	  $(BIN) validate $$c --device cpu $$one || exit 1; \
	done
	for c in $(SCREEN_CONFIGS); do \
	  out=$$(mktemp -d) && $(BIN) screen systems/screen/bad_records.sdf --config $$c --device cpu --output $$out/screen --quiet && rm -rf $$out || exit 1; \
	done

# In-process tests get the allocator setting the binary makes for itself
# (src/main.rs, keep_freed_memory): without it libtorch's CPU tensors are
# mmapped and unmapped every step and the physics tests run ~2x slower.
TEST_MALLOC := MALLOC_MMAP_THRESHOLD_=2147483647 MALLOC_TRIM_THRESHOLD_=2147483647 MALLOC_TOP_PAD_=268435456

test: setup ani-models
	$(TEST_MALLOC) cargo test --release $(CARGO_FEATURES)
	$(MAKE) --no-print-directory validate
	$(PY) python/check_outputs.py $(BIN)
	$(PY) python/check_ani.py
	$(PY) python/check_aimnet2.py
	$(TEST_MALLOC) $(PY) python/check_sevenn.py
	$(PY) python/check_report.py $(BIN)
	$(PY) python/wrap_schnet_example.py $(BIN)
	$(PY) python/check_pt2.py $(BIN)
	$(PY) python/check_pt2_pairs.py $(BIN)
	$(PY) python/check_ani_triton.py $(BIN)

# Regenerate the committed test models (models/morse_test.pt, tests/data/*.pt);
# not needed to build or test, and not run by them.
models: setup
	$(PY) python/make_test_models.py

systems: setup
	$(PY) -m pip install -q rdkit
	$(PY) python/build_systems.py
	$(PY) python/build_ani2xt_systems.py
	# OpenMM for the water boxes (it does not depend on torch)
	$(PY) -m pip install -q --no-deps openmm==8.6.1
	$(PY) python/build_water.py
	$(PY) python/build_crystals.py
	# Peptides in TIP3P water, no ions (systems/solvated/; about 3 min each)
	$(PY) python/solvate.py systems/peptides/chignolin_folded.pdb --padding 10 --out systems/solvated/chignolin_water.pdb
	$(PY) python/solvate.py systems/peptides/trpcage_folded.pdb --padding 8 --out systems/solvated/trpcage_water.pdb

# The `mlff-md screen` library: 12,000 MOSES molecules from the molsets 0.3.1
# wheel (a 52 MB download into .cache/molsets), ETKDGv3 3D structures in
# systems/screen/library.sdf.gz (git-ignored), ~3 min on 2 cores. Not part of
# `make test`. systems/README.md, "Screening library". RDKit is installed if
# missing, at the version library.json records (another may move coordinates).
screen-library: setup
	$(PY) -c 'import rdkit' 2>/dev/null || $(PY) -m pip install -q rdkit==2026.9.1
	$(PY) python/build_screen_library.py

# Mutation testing (cargo-mutants) of the modules that decide the physics; not
# part of `make test`: each mutant costs a release rebuild and the physics
# tests (~1-2 min here), and these modules have ~440 mutants. MUTATE narrows
# it, e.g. `make mutants MUTATE=src/units.rs`. It mutates this checkout in
# place (a copied tree rebuilds the bundled HDF5 and chemfiles from scratch,
# and HDF5's cmake fails at the new path), restoring each file after its
# mutant: do not edit the checkout while it runs (a spare clone works well).
# Outcomes in target/mutants/; python/mutants_report.py appends the summary
# to docs/mutants.md. The test targets go to every cargo call (-C), so each
# mutant builds only them, and the release profile builds incrementally for
# the run (same optimisation level; 2-6 s a mutant's build here
# instead of 40 s); MUTANTS_FLAGS=--iterate skips the mutants a stopped run
# already caught.
MUTATE ?= src/integrate/*.rs src/sampling/*.rs src/rng.rs src/units.rs src/force/*.rs
MUTANTS_TESTS ?= --lib --test=physics --test=statistics --test=replica_exchange --test=bench --test=cuda_graphs --test=blowup
MUTANTS_FLAGS ?=
mutants: build
	command -v cargo-mutants >/dev/null || cargo install cargo-mutants --locked --version 27.1.0
	CARGO_PROFILE_RELEASE_INCREMENTAL=true cargo mutants --profile release --in-place --no-shuffle $(MUTANTS_FLAGS) \
	  $(foreach f,$(MUTATE),-f '$(f)') -o target/mutants $(foreach t,$(MUTANTS_TESTS),--cargo-arg=$(t)); \
	$(PY) python/mutants_report.py target/mutants/mutants.out docs/mutants.md

fmt:
	cargo fmt --all

lint: setup
	cargo fmt --all -- --check
	cargo clippy --release --all-targets $(CARGO_FEATURES) -- -D warnings

clean:
	cargo clean
	rm -rf out
