# SPDX-License-Identifier: MIT
#
# Thin wrapper over CMake (in the spirit of neovim's Makefile). User targets:
#
#   make run       Release build in build/, then build/perf/ring_bench --quick
#   make test      Release build in build/, then the whole ctest suite, which
#                  registers every test twice: <name> on epoll, <name>_uring
#                  on io_uring (ES_BACKEND; ctest -L io_uring runs one set)
#   make sanitize  ASan+UBSan build in build-asan/ (whole suite), then TSan
#                  build in build-tsan/ (tests labelled "concurrency")
#   make fuzz      libFuzzer targets (clang, ASan+UBSan) in build-fuzz/, each
#                  run for FUZZ_SECONDS (default 60); see docs/fuzzing.md
#   make clean     clean the build trees;  make distclean  delete them
#   make format    clang-format our C sources in place
#
# Every target first runs .ci/deps.sh, which checks (and as root installs)
# the Debian packages. Pass extra configure flags with
# CMAKE_EXTRA_FLAGS="-DES_WERROR=ON ...".

# cmake --build runs make again; keep its output free of directory noise.
MAKEFLAGS += --no-print-directory

CMAKE ?= cmake
CTEST ?= ctest
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_EXTRA_FLAGS ?=

BUILD_DIR := build
ASAN_DIR := build-asan
TSAN_DIR := build-tsan
FUZZ_DIR := build-fuzz

FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=

ASAN_ENV := ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

TSAN_SUPP := $(CURDIR)/tests/tsan.supp
TSAN_ENV := TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1$(if \
	$(wildcard $(TSAN_SUPP)), suppressions=$(TSAN_SUPP))"

# TSan needs a particular address-space layout; with the high mmap entropy
# of recent kernels (vm.mmap_rnd_bits > 28) the TSan runtime of GCC 12 can
# die with "FATAL: ThreadSanitizer: unexpected memory mapping". Running the
# TSan tests with ASLR disabled (setarch -R) avoids it. Not seen on the
# Debian 12 dev box (mmap_rnd_bits = 28); kept as insurance for CI hosts.
# Containers whose seccomp profile forbids personality(ADDR_NO_RANDOMIZE)
# cannot do it, so it is used only where it works.
TSAN_WRAP = $(shell setarch $$(uname -m) -R true >/dev/null 2>&1 && \
	echo setarch $$(uname -m) -R)

FORMAT := $(shell command -v clang-format-14 2>/dev/null || \
	command -v clang-format 2>/dev/null)
FORMAT_DIRS := include src actors http tests perf examples

.DEFAULT_GOAL := test
.PHONY: run test sanitize fuzz clean distclean format deps

deps:
	@./.ci/deps.sh

run: deps
	$(CMAKE) -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=Release $(CMAKE_EXTRA_FLAGS)
	$(CMAKE) --build $(BUILD_DIR) -j$(JOBS)
	$(BUILD_DIR)/perf/ring_bench --quick

# Serial ctest: every test binary already runs several runtimes, each with
# its own threads, in parallel.
test: deps
	$(CMAKE) -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=Release $(CMAKE_EXTRA_FLAGS)
	$(CMAKE) --build $(BUILD_DIR) -j$(JOBS)
	$(CTEST) --test-dir $(BUILD_DIR) --output-on-failure --no-tests=error

# ASan: ES_TEST_JOBS=1 because Criterion 2.4's runner process itself leaks a
# few bytes when it runs tests in parallel, which LeakSanitizer reports as a
# failure of the whole binary (Snaipe/Criterion PR #515 is not released).
# TSan: the tests link criterion_lite instead of libcriterion, see
# tests/CMakeLists.txt.
sanitize: deps
	$(CMAKE) -S . -B $(ASAN_DIR) -DCMAKE_BUILD_TYPE=Debug \
		-DES_SANITIZE=address,undefined -DES_BUILD_PERF=OFF \
		-DES_TEST_SCALE=0.1 -DES_TEST_JOBS=1 $(CMAKE_EXTRA_FLAGS)
	$(CMAKE) --build $(ASAN_DIR) -j$(JOBS)
	$(ASAN_ENV) $(CTEST) --test-dir $(ASAN_DIR) --output-on-failure \
		--no-tests=error
	$(CMAKE) -S . -B $(TSAN_DIR) -DCMAKE_BUILD_TYPE=Debug \
		-DES_SANITIZE=thread -DES_BUILD_PERF=OFF \
		-DES_TEST_SCALE=0.05 $(CMAKE_EXTRA_FLAGS)
	$(CMAKE) --build $(TSAN_DIR) -j$(JOBS)
	$(TSAN_ENV) $(TSAN_WRAP) $(CTEST) --test-dir $(TSAN_DIR) \
		--output-on-failure --no-tests=error -L concurrency

# libFuzzer needs clang; tests/fuzz/run.sh fails on any crash, leak or
# timeout and leaves the input under build-fuzz/fuzz-work/<target>/.
fuzz: deps
	CC=clang $(CMAKE) -S . -B $(FUZZ_DIR) -DCMAKE_BUILD_TYPE=Debug \
		-DES_BUILD_FUZZ=ON -DES_BUILD_TESTS=OFF -DES_BUILD_PERF=OFF \
		-DES_BUILD_EXAMPLES=OFF $(CMAKE_EXTRA_FLAGS)
	$(CMAKE) --build $(FUZZ_DIR) -j$(JOBS)
	tests/fuzz/run.sh $(FUZZ_DIR) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

clean:
	for d in $(BUILD_DIR) $(ASAN_DIR) $(TSAN_DIR) $(FUZZ_DIR); do \
		if [ -f $$d/CMakeCache.txt ]; then $(CMAKE) --build $$d --target clean; fi; \
	done

distclean:
	rm -rf $(BUILD_DIR) $(ASAN_DIR) $(TSAN_DIR) $(FUZZ_DIR)

format:
	@test -n "$(FORMAT)" || { echo "clang-format not found" >&2; exit 1; }
	find $(FORMAT_DIRS) -name '*.[ch]' -print 2>/dev/null | \
		xargs -r $(FORMAT) -i
