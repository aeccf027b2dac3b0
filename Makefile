# ferry -- build, test, run. `make help` lists the targets.
SHELL   := /bin/bash
CC      ?= gcc
BUILD   ?= build
SAN     ?=
CFLAGS  ?= -O2 -g
WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-missing-field-initializers
ALLCFLAGS := -std=gnu11 $(WARN) -D_GNU_SOURCE -pthread -Isrc -MMD -MP $(CFLAGS)
LDLIBS  := -pthread -lutil -lZydis -llzma -lz -lslirp
ifeq ($(SAN),1)
ALLCFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS   += -fsanitize=address,undefined
endif

LIB_SRCS  := $(sort $(shell find src -name '*.c' ! -path src/main.c))
LIB_OBJS  := $(LIB_SRCS:%.c=$(BUILD)/%.o)
UNIT_SRCS := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/unit/%)

.PHONY: all unit-bins run run-demo test unit integration guests bench bench-linux bench-virtio bench-soft fuzz fuzz-long format format-check lint tidy clean help

all: $(BUILD)/ferry guests

Q := $(if $(V),,@)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) $(ALLCFLAGS) -c $< -o $@

$(BUILD)/ferry: $(BUILD)/src/main.o $(LIB_OBJS)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/unit/%: tests/unit/%.c $(LIB_OBJS)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(ALLCFLAGS) $(LDFLAGS) -o $@ $< $(LIB_OBJS) $(LDLIBS) -lcmocka

unit-bins: $(UNIT_BINS)

guests:
	$(MAKE) -C tests/guests

# Boots the bundled demo guest on the KVM engine (the soft engine is not built yet).
# Boots Debian's Linux (fetched by scripts/fetch-linux.sh) to a shell on the console; the
# engine is chosen for the host (kvm with hardware virtualization, soft otherwise).
LINUX_DIR ?= $(or $(FERRY_CACHE),/var/cache/ferry)/linux
run:
	./scripts/setup.sh
	$(MAKE) all
	./scripts/fetch-linux.sh
	./$(BUILD)/ferry run --kernel $(LINUX_DIR)/vmlinuz --initrd $(LINUX_DIR)/initramfs.cpio.gz \
		--append "console=ttyS0"

# The demo guest of the early days, on KVM.
run-demo:
	./scripts/setup.sh
	$(MAKE) all
	./$(BUILD)/ferry run --engine kvm --kernel tests/guests/build/demo.elf --no-reboot

# The whole suite: unit + integration tests, then again under ASan+UBSan, then a short fuzz pass.
test:
	./scripts/test.sh

unit: $(BUILD)/ferry $(UNIT_BINS)
	./scripts/run-unit.sh $(BUILD)

integration: $(BUILD)/ferry guests
	./tests/integration/run.sh $(BUILD)/ferry

fuzz:
	$(MAKE) -C tests/fuzz run SECONDS=$${SECONDS_FUZZ:-20}

fuzz-long:
	$(MAKE) -C tests/fuzz run SECONDS=$${SECONDS_FUZZ:-600}

bench:
	./scripts/setup.sh --bench
	$(MAKE) $(BUILD)/ferry guests
	./bench/bench.sh $(BUILD)/ferry

# The soft engine vs native and user-mode QEMU (qemu-x86_64) on busybox workloads.
bench-linux:
	./scripts/setup.sh --bench
	$(MAKE) $(BUILD)/ferry
	./bench/linux.sh $(BUILD)/ferry

# virtio-blk throughput (raw and qcow2 images) on the soft engine vs QEMU TCG, same Linux guest.
bench-virtio:
	./scripts/setup.sh --bench
	$(MAKE) $(BUILD)/ferry
	./bench/virtio.sh $(BUILD)/ferry

bench-soft:
	./scripts/setup.sh --bench
	$(MAKE) $(BUILD)/ferry-user
	./bench/soft.sh $(BUILD)/ferry-user

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

format-check:
	clang-format --dry-run --Werror $$(git ls-files 'src/*.c' 'src/*.h' 'tests/*.c' 'tests/*.h' 'bench/*.c')

lint:
	cppcheck --quiet --error-exitcode=1 --enable=warning,portability --inline-suppr \
		--suppress=missingIncludeSystem -D__x86_64__ -Isrc src

# The checks are in .clang-tidy; "N warnings generated" counts only suppressed system-header ones.
tidy:
	@clang-tidy --quiet --warnings-as-errors='*' $$(git ls-files 'src/*.c') \
		-- -Isrc -D_GNU_SOURCE -std=gnu11 -pthread 2>&1 | grep -v 'warnings\? generated'; \
		exit $${PIPESTATUS[0]}

clean:
	rm -rf build build-*
	$(MAKE) -C tests/guests clean
	$(MAKE) -C tests/fuzz clean

help:
	@echo "make run          build and boot Debian's Linux to a shell (engine auto)"
	@echo "make run-demo     build and boot the demo guest (KVM engine)"
	@echo "make test         the whole test suite (plain, then ASan+UBSan, then a short fuzz pass)"
	@echo "make unit | integration | fuzz | fuzz-long | diff | diff-long | bench | bench-linux | bench-virtio"
	@echo "     bench-soft | format | lint | tidy | clean"

include tests/diff/Makefile.inc
include tests/tools/ferry-user/Makefile.inc

-include $(LIB_OBJS:.o=.d) $(BUILD)/src/main.d $(UNIT_BINS:=.d)
