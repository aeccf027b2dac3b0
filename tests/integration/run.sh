#!/usr/bin/env bash
# ferry integration tests: boots the test guests (tests/guests) under the binary given as $1 and
# checks exit statuses, console output and error messages, plus the command line's handling of
# bad input. Prints "PASS name" / "FAIL name: why" / "SKIP name: why" per case and ends with
# "N passed, N failed" (", N skipped" when cases could not run). Exit status 1 if any failed.
#
# Usage: tests/integration/run.sh path/to/ferry
# Env:   FERRY_TEST_ENGINE  (kvm or soft: the engine the guest cases boot on; default kvm)
#        FERRY_TEST_TIMEOUT (seconds per case, default 60)
#        FERRY_TEST_LINUX_WAIT (seconds for Linux to reach its shell, default 60)
#        FERRY_TEST_ONLY    (extended regex: run only the cases whose name matches)
set -u

if [ $# -ne 1 ] || [ ! -x "$1" ]; then
	echo "usage: $0 FERRY_BINARY" >&2
	exit 2
fi
FERRY=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
HERE=$(cd "$(dirname "$0")" && pwd)
GDIR=$(cd "$HERE/../guests" && pwd)
G=$GDIR/build
T=${FERRY_TEST_TIMEOUT:-60}
T_BAD=${FERRY_TEST_TIMEOUT_BAD:-15} # for input that must be refused before any guest code runs
ONLY=${FERRY_TEST_ONLY:-}
ENGINE=${FERRY_TEST_ENGINE:-kvm}

if ! make -s -C "$GDIR" >/dev/null; then
	echo "FAIL build-guests: make -C $GDIR failed"
	echo "0 passed, 1 failed"
	exit 1
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/ferry-it.XXXXXX")
BGPID=
cleanup() {
	[ -n "$BGPID" ] && kill "$BGPID" 2>/dev/null
	rm -rf "$TMP"
}
trap cleanup EXIT

KVM=1
KVM_WHY=
if [ ! -e /dev/kvm ]; then
	KVM=0 KVM_WHY="no /dev/kvm on this host"
elif [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
	KVM=0 KVM_WHY="/dev/kvm is not readable and writable"
fi

printf 'hello initrd line\nsecond line\n' >"$TMP/initrd"
INITRD_SIZE=$(stat -c %s "$TMP/initrd")

PASSED=0 FAILED=0 SKIPPED=0
NAME='' WHY='' RC='' RUNNING=0

# ---- case framework ----

# begin NAME [kvm|guest]: starts a case; returns 1 (caller skips the case) when filtered out or
# when it cannot run. "kvm" cases need the KVM engine; "guest" cases boot a guest on the engine
# under test (FERRY_TEST_ENGINE, default kvm). With the soft engine only the guest cases run
# (named soft-NAME); the command-line cases do not depend on the engine.
begin() {
	NAME=$1 WHY='' RC='' RUNNING=0
	if [ "$ENGINE" = soft ]; then
		[ "${2:-}" = guest ] || return 1
		NAME=soft-$1
	fi
	if [ -n "$ONLY" ] && ! [[ $NAME =~ $ONLY ]]; then
		return 1
	fi
	if [ "$ENGINE" = kvm ] && [ -n "${2:-}" ] && [ $KVM = 0 ]; then
		echo "SKIP $NAME: $KVM_WHY"
		SKIPPED=$((SKIPPED + 1))
		return 1
	fi
	RUNNING=1
	: >"$TMP/out"
	: >"$TMP/err"
	return 0
}

fail() { WHY="${WHY:+$WHY; }$*"; }

# Indented, truncated copy of a captured file for FAIL reports.
show() {
	local f=$1 label=$2
	if [ -s "$f" ]; then
		echo "    --- $label ---"
		tr -d '\r' <"$f" | head -c 3000 | head -n 40 | sed 's/^/    | /'
	else
		echo "    --- $label: (empty) ---"
	fi
}

end() {
	[ $RUNNING = 1 ] || return 0
	if [ -z "$WHY" ]; then
		echo "PASS $NAME"
		PASSED=$((PASSED + 1))
	else
		echo "FAIL $NAME: $WHY (exit status $RC)"
		show "$TMP/out" stdout
		show "$TMP/err" stderr
		FAILED=$((FAILED + 1))
	fi
	RUNNING=0
}

# ferry ARGS...: runs ferry with stdin from /dev/null, output captured, status in RC.
# (bad_ferry: the same with the short timeout, for input ferry must refuse up front.)
TO=$T
ferry() {
	timeout -k 5 "$TO" "$FERRY" "$@" </dev/null >"$TMP/out.raw" 2>"$TMP/err"
	RC=$?
	tr -d '\r' <"$TMP/out.raw" >"$TMP/out"
	[ $RC = 124 ] && fail "timed out after ${TO}s"
	return 0
}
bad_ferry() {
	TO=$T_BAD
	ferry "$@"
	TO=$T
}

# ferry_guest ARGS...: the same on the engine under test with the console on stdio.
ferry_guest() { ferry run --engine "$ENGINE" --serial stdio "$@"; }

expect_rc() {
	[ "$RC" = "$1" ] || fail "expected exit status $1, got $RC"
}
expect_rc_nonzero() {
	[ "$RC" != 0 ] || fail "expected a non-zero exit status"
}
# expect_out REGEX...: each extended regex matches a whole line of stdout.
expect_out() {
	local re
	for re in "$@"; do
		grep -Eq -- "^($re)\$" "$TMP/out" || fail "no stdout line matching /$re/"
	done
}
expect_no_out() {
	local re
	for re in "$@"; do
		! grep -Eq -- "$re" "$TMP/out" || fail "stdout unexpectedly matches /$re/"
	done
}
# expect_err REGEX...: each extended regex (case-insensitive) matches somewhere in stderr.
expect_err() {
	local re
	for re in "$@"; do
		grep -Eiq -- "$re" "$TMP/err" || fail "stderr does not match /$re/"
	done
}
# One line on stderr, "ferry: ...".
expect_err_one_line() {
	local n
	n=$(wc -l <"$TMP/err")
	if [ "$n" != 1 ]; then
		fail "expected exactly one line on stderr, got $n"
	elif ! grep -q '^ferry: ' "$TMP/err"; then
		fail "the stderr line does not start with 'ferry: '"
	fi
}
expect_err_empty() {
	[ ! -s "$TMP/err" ] || fail "stderr is not empty"
}
expect_count() { # expect_count REGEX N: exactly N stdout lines match
	local n
	n=$(grep -Ec -- "^($1)\$" "$TMP/out")
	[ "$n" = "$2" ] || fail "expected $2 stdout lines matching /$1/, got $n"
}

# Polls until stdout (file $TMP/out.raw) has at least N lines matching REGEX, or S seconds pass.
wait_for_lines() {
	local re=$1 n=$2 s=$3 i=0
	while [ $i -lt $((s * 20)) ]; do
		[ "$(tr -d '\r' <"$TMP/out.raw" | grep -Ec -- "$re")" -ge "$n" ] && return 0
		[ -n "$BGPID" ] && ! kill -0 "$BGPID" 2>/dev/null && break
		sleep 0.05
		i=$((i + 1))
	done
	[ "$(tr -d '\r' <"$TMP/out.raw" | grep -Ec -- "$re")" -ge "$n" ]
}

# ---- command line, no VM needed ----

if begin help; then
	bad_ferry --help
	expect_rc 0
	expect_out 'usage: ferry run --kernel FILE.*'
	expect_err_empty
	end
fi

if begin version; then
	bad_ferry version
	expect_rc 0
	expect_out 'ferry [0-9]+\.[0-9]+.*'
	end
fi

if begin no-arguments; then
	ferry
	expect_rc 2
	end
fi

if begin unknown-command; then
	bad_ferry frobnicate
	expect_rc 2
	expect_err '^ferry: '
	end
fi

if begin unknown-option; then
	bad_ferry run --kernel "$G/mb_test.elf" --frobnicate
	expect_rc 2
	expect_err_one_line
	expect_err 'frobnicate'
	end
fi

if begin run-without-kernel; then
	bad_ferry run --engine kvm
	expect_rc 2
	expect_err_one_line
	expect_err 'kernel'
	end
fi

for m in 0 99999999G abc 12Q -5; do
	if begin "memory-size-$m"; then
		bad_ferry run --engine kvm --kernel "$G/mb_test.elf" -m "$m"
		expect_rc 2
		expect_err_one_line
		end
	fi
done

for n in 0 -1 x; do
	if begin "smp-$n"; then
		bad_ferry run --engine kvm --kernel "$G/mb_test.elf" --smp "$n"
		expect_rc 2
		expect_err_one_line
		end
	fi
done

if begin engine-unknown; then
	bad_ferry run --kernel "$G/mb_test.elf" --engine warp
	expect_rc 2
	expect_err_one_line
	end
fi

if begin serial-unknown kvm; then
	bad_ferry run --engine kvm --kernel "$G/mb_test.elf" --serial carrier-pigeon
	expect_rc 2
	expect_err_one_line
	end
fi

if begin option-missing-value; then
	bad_ferry run --engine kvm --kernel
	expect_rc 2
	expect_err '^ferry: '
	end
fi

# --drive: every mistake is one line and status 2, before the guest runs.
truncate -s 1M "$TMP/ok.raw"
head -c 1000 /dev/zero >"$TMP/odd.raw"
for spec in "file=$TMP/ok.raw" "file=$TMP/ok.raw,format=vmdk" "format=raw" \
	"file=$TMP/ok.raw,format=raw,cache=none" "file=$TMP/ok.raw,format=raw,readonly=maybe" \
	"file=$TMP/ok.raw,format" "file=$TMP/no-such.img,format=raw" "file=$TMP/ok.raw,format=qcow2" \
	"file=$TMP/odd.raw,format=raw" "file=$TMP/,format=raw"; do
	if begin "drive-bad-$(echo "${spec#file=$TMP/}" | tr -c 'a-z0-9\n' '-')"; then
		bad_ferry run --engine soft --kernel "$G/mb_test.elf" --drive "$spec"
		expect_rc 2
		expect_err_one_line
		expect_err '^ferry: .*(drive|format)'
		end
	fi
done

# ---- bad input files (loaded before the VM starts; KVM engine requested explicitly) ----

if begin kernel-missing kvm; then
	bad_ferry run --engine kvm --kernel "$TMP/no-such-kernel"
	expect_rc 2
	expect_err_one_line
	expect_err 'no-such-kernel'
	end
fi

if begin kernel-not-a-kernel kvm; then
	bad_ferry run --engine kvm --kernel /etc/passwd
	expect_rc 2
	expect_err_one_line
	end
fi

if begin kernel-empty kvm; then
	: >"$TMP/empty"
	bad_ferry run --engine kvm --kernel "$TMP/empty"
	expect_rc 2
	expect_err_one_line
	end
fi

if begin kernel-directory kvm; then
	bad_ferry run --engine kvm --kernel "$TMP"
	expect_rc 2
	expect_err_one_line
	end
fi

if begin initrd-missing kvm; then
	bad_ferry run --engine kvm --kernel "$G/mb_test.elf" --initrd "$TMP/no-such-initrd"
	expect_rc 2
	expect_err_one_line
	expect_err 'no-such-initrd'
	end
fi

for n in 600 1100 2000; do
	if begin "bzimage-truncated-$n" kvm; then
		head -c $n "$G/bzimage_test.bin" >"$TMP/bz-trunc"
		bad_ferry run --engine kvm --kernel "$TMP/bz-trunc"
		expect_rc 2
		expect_err_one_line
		end
	fi
done

if begin bzimage-bad-setup-sects kvm; then
	# setup_sects (0x1f1) = 200: the setup area would run past the end of the file.
	cp "$G/bzimage_test.bin" "$TMP/bz-bad"
	printf '\310' | dd of="$TMP/bz-bad" bs=1 seek=$((0x1f1)) conv=notrunc status=none
	bad_ferry run --engine kvm --kernel "$TMP/bz-bad"
	expect_rc 2
	expect_err_one_line
	end
fi

if begin multiboot-elf64-refused kvm; then
	# Multiboot takes ELF32 only (as QEMU); the ELF64 build of mb_test has no PVH note.
	bad_ferry run --engine kvm --kernel "$G/mb_test.elf64"
	expect_rc 2
	expect_err_one_line
	end
fi

if begin elf-truncated kvm; then
	head -c 5000 "$G/pvh_test.elf" >"$TMP/pvh-trunc"
	bad_ferry run --engine kvm --kernel "$TMP/pvh-trunc"
	expect_rc 2
	expect_err_one_line
	end
fi

# ---- guests on the KVM engine ----

if begin multiboot kvm; then
	ferry_guest --kernel "$G/mb_test.elf" --initrd "$TMP/initrd" --append "hello mb exit=5" -m 256M --smp 2
	expect_rc 11
	expect_out 'magic ok, flags 0x[0-9a-f]+' 'fw_cfg: 2 cpus, ram 256 MiB' 'mem_upper ok' \
		"cmdline: '(.* )?hello mb exit=5'" 'modules: 1' \
		"module 0 at 0x[0-9a-f]+ size $INITRD_SIZE" 'module 0 first line: hello initrd line' \
		'mmap entries: [1-9][0-9]*, ram 25[0-9] MiB' 'mb_test ok' 'exiting with 5'
	# The CMOS RTC tells the host's date (UTC or local; either year around New Year).
	expect_out "rtc: ($(date -u +%Y)|$(date +%Y))-[01][0-9]-[0-3][0-9] [0-2][0-9]:[0-5][0-9]:[0-5][0-9]"
	expect_no_out 'FAIL'
	end
fi

if begin multiboot-no-initrd guest; then
	ferry_guest --kernel "$G/mb_test.elf" --append "exit=0"
	expect_rc 1
	expect_out 'fw_cfg: 1 cpus, ram 256 MiB' 'modules: 0' 'mb_test ok'
	end
fi

if begin memory-size-reaches-guest guest; then
	ferry_guest --kernel "$G/mb_test.elf" -m 1G --append "exit=0"
	expect_rc 1
	expect_out 'fw_cfg: 1 cpus, ram 1024 MiB' 'mem_upper ok' 'mb_test ok'
	end
fi

if begin pvh guest; then
	ferry_guest --kernel "$G/pvh_test.elf" --initrd "$TMP/initrd" --append "hello pvh exit=6"
	expect_rc 13
	expect_out 'start_info magic ok, version [0-9]+' "cmdline: 'hello pvh exit=6'" \
		'memmap entries: [1-9][0-9]*, ram 25[0-9] MiB' 'modules: 1' \
		"module 0 at 0x[0-9a-f]+ size $INITRD_SIZE" 'module 0 first line: hello initrd line' \
		'long mode ok' 'exiting with 6'
	expect_no_out 'FAIL'
	end
fi

if begin pvh-no-initrd guest; then
	ferry_guest --kernel "$G/pvh_test.elf" --append "exit=0"
	expect_rc 1
	expect_out 'modules: 0' 'long mode ok'
	end
fi

if begin bzimage guest; then
	ferry_guest --kernel "$G/bzimage_test.bin" --initrd "$TMP/initrd" --append "console=ttyS0 exit=7"
	expect_rc 15
	expect_out 'bzimage_test: 64-bit entry, boot_params at 0x[0-9a-f]+' \
		'boot protocol 0x20f, type_of_loader 0x[0-9a-f]+, loadflags 0x[0-9a-f]+' \
		"cmdline: 'console=ttyS0 exit=7'" 'e820 entries: [1-9][0-9]*, ram 25[0-9] MiB' \
		"initrd at 0x[0-9a-f]+ size $INITRD_SIZE" 'initrd first line: hello initrd line' \
		'bzimage_test ok' 'exiting with 7'
	expect_no_out 'FAIL'
	end
fi

if begin bzimage-no-initrd guest; then
	ferry_guest --kernel "$G/bzimage_test.bin" --append "exit=0"
	expect_rc 1
	expect_out 'initrd at 0x[0-9a-f]+ size 0' 'bzimage_test ok'
	end
fi

if begin unmapped-mmio guest; then
	ferry_guest --kernel "$G/mmio_test.elf"
	expect_rc 4
	expect_out 'about to touch unmapped MMIO'
	expect_no_out 'store returned'
	expect_err_one_line
	expect_err 'unmapped MMIO' '0x0*f0000000' 'rip'
	end
fi

if begin triple-fault guest; then
	ferry_guest --kernel "$G/triple.elf"
	expect_rc 4
	expect_out 'triple: loading an empty IDT, then ud2'
	expect_no_out 'still running'
	expect_err_one_line
	expect_err 'triple fault'
	end
fi

if begin triple-fault-reset guest; then
	# --triple-fault reset: a reset, so with --no-reboot ferry exits 0.
	ferry_guest --kernel "$G/triple.elf" --triple-fault reset --no-reboot
	expect_rc 0
	expect_out 'triple: loading an empty IDT, then ud2'
	expect_no_out 'still running'
	end
fi

if begin triple-fault-bad-action; then
	bad_ferry run --kernel "$G/triple.elf" --triple-fault explode
	expect_rc 2
	expect_err_one_line
	expect_err 'triple-fault'
	end
fi

if begin reset-no-reboot guest; then
	ferry_guest --kernel "$G/reset_test.elf" --no-reboot
	expect_rc 0
	expect_count 'boot' 1
	end
fi

if begin reset-reboots guest; then
	timeout -k 5 "$T" "$FERRY" run --engine "$ENGINE" --serial stdio --kernel "$G/reset_test.elf" \
		</dev/null >"$TMP/out.raw" 2>"$TMP/err" &
	BGPID=$!
	if wait_for_lines '^boot' 3 30; then
		kill "$BGPID" 2>/dev/null
		wait "$BGPID" 2>/dev/null
		RC=killed
	else
		kill "$BGPID" 2>/dev/null
		wait "$BGPID" 2>/dev/null
		RC=$?
		fail "the guest did not boot 3 times within 30 s"
	fi
	BGPID=
	tr -d '\r' <"$TMP/out.raw" >"$TMP/out"
	end
fi

if begin smp kvm; then
	ferry_guest --kernel "$G/smp_test.elf" --smp 2
	expect_rc 1
	expect_out 'smp_test: 2 cpus per fw_cfg, bsp apic id 0' 'MP table: 2 cpus' 'cpu 1 up' 'all 2 cpus up'
	expect_no_out 'FAIL'
	end
fi

if begin smp-one-cpu guest; then
	ferry_guest --kernel "$G/smp_test.elf" --smp 1
	expect_rc 1
	expect_out 'MP table: 1 cpus' 'all 1 cpus up'
	end
fi

for n in 1 2 3; do
	if begin "cpuid-smp-$n" "$([ "$n" = 1 ] && echo guest || echo kvm)"; then
		# The CPUID model (src/engine/kvm/kvm_cpuid.c) as every CPU sees it: APIC IDs, CPU
		# count, topology leaves, hypervisor bit and signature, no VMX/SVM.
		ferry_guest --kernel "$G/smp_test.elf" --smp "$n" --append cpuid
		expect_rc 1
		expect_out "cpuid: max leaf 0x[0-9a-f]+, max extended leaf 0x[0-9a-f]+, vendor '.*', hypervisor 'KVMKVMKVM'" \
			"all $n cpus up"
		for ((i = 0; i < n; i++)); do
			expect_out "cpu $i cpuid ok"
		done
		expect_no_out 'FAIL'
		end
	fi
done

if begin timer guest; then
	# PIT channel 0 at 100 Hz through the 8259, hlt between ticks: the 20 tick intervals take
	# 0.2 s of real time (the rest of the run is milliseconds).
	start=$(date +%s%N)
	ferry_guest --kernel "$G/timer_test.elf"
	ms=$((($(date +%s%N) - start) / 1000000))
	expect_rc 1
	expect_out 'timer: 20 ticks' 'tsc per tick: [1-9][0-9]* \(min [0-9]+, max [0-9]+\)' 'timer_test ok'
	expect_no_out 'FAIL'
	[ $ms -ge 150 ] || fail "the run took ${ms} ms: 20 ticks at 100 Hz are 200 ms"
	[ $ms -lt 5000 ] || fail "the run took ${ms} ms: 20 ticks at 100 Hz are 200 ms"
	end
fi

if begin timer-rtc guest; then
	# The guest counts PIT ticks between two changes of the CMOS RTC's seconds (host time).
	ferry_guest --kernel "$G/timer_test.elf" --append rtc
	expect_rc 1
	expect_out 'timer: 20 ticks' 'rtc: [0-9]+ ticks in one RTC second \([0-9]+ TSC cycles\)' 'timer_test ok'
	expect_no_out 'FAIL'
	end
fi

if begin virtio-rng guest; then
	# A small virtio 1.x PCI driver: the PCI scan and capabilities, then virtio-rng's queue
	# served with an MSI-X interrupt (irqfd on KVM) and again with INTx through the I/O APIC,
	# and a descriptor outside RAM that must put the device in NEEDS_RESET.
	ferry_guest --kernel "$G/virtio_test.elf" --rng
	expect_rc 1
	expect_out 'virtio-rng at 00:[0-9a-f]{2}\.0, revision [1-9][0-9]*, subsystem 1af4:1044, irq pin 1 line [0-9]+' \
		'caps: common \+0x[0-9a-f]+ notify \+0x[0-9a-f]+ \(x[0-9]+\) isr \+0x[0-9a-f]+ msix \+0x[0-9a-f]+' \
		'msix: interrupt on vector 0x31' \
		'msix: used idx 2, lens 64 and 32, bytes [0-9a-f]{8}\.\.\.' \
		'intx: interrupt on GSI (1[6-9]|2[0-3]), ISR 0x1' \
		'intx: used idx 2, lens 64 and 32, bytes [0-9a-f]{8}\.\.\.' \
		'bad buffer: status 0x4f after [0-9]+ reads, ISR 0x2, used idx 0' \
		'reset: status 0' 'virtio_test ok'
	expect_no_out 'FAIL'
	expect_err 'virtio-rng: the guest driver broke a rule \(descriptor 0: .*outside RAM\): device needs reset'
	end
fi

if begin cpl3-native guest; then
	start=$(date +%s)
	ferry_guest --kernel "$G/cpl3_test.elf"
	secs=$(($(date +%s) - start))
	expect_rc 1
	expect_out 'back at CPL 0 from cs 0x2b \(CPL 3\) via (int 0x80|#UD on int 0x80|#GP on int 0x80)' 'cpl3 result (0x[0-9a-f]+), expected \2' 'cpl3 ok'
	# 10^7 loop iterations: native at CPL 3 is milliseconds; emulated would be far slower.
	[ $secs -le 20 ] || fail "took ${secs}s: the CPL 3 loop did not run natively"
	end
fi

if begin demo-exit kvm; then
	ferry_guest --kernel "$G/demo.elf" --append "demo-exit" --no-reboot --smp 2 -m 128M
	expect_rc 0
	expect_out '  ferry demo guest' 'cpus: 2' 'ram: 128 MiB' 'cmdline: (.* )?demo-exit' 'demo-exit: powering off'
	end
fi

if begin demo-shell guest; then
	# Types into the shell through a FIFO, waiting for each prompt: exercises UART receive
	# interrupts through the 8259 PIC.
	mkfifo "$TMP/in"
	timeout -k 5 "$T" "$FERRY" run --engine "$ENGINE" --serial stdio --kernel "$G/demo.elf" \
		--append "shell test" <"$TMP/in" >"$TMP/out.raw" 2>"$TMP/err" &
	BGPID=$!
	exec 3>"$TMP/in"
	n=0
	for line in 'help' 'echo hello  world' $'ecx\x7fho bs' 'info' 'bogus' 'exit 3'; do
		n=$((n + 1))
		if ! wait_for_lines 'ferry> ' $n 20; then
			fail "no prompt #$n"
			kill "$BGPID" 2>/dev/null
			break
		fi
		printf '%s\r' "$line" >&3
	done
	wait "$BGPID"
	RC=$?
	exec 3>&-
	BGPID=
	tr -d '\r' <"$TMP/out.raw" >"$TMP/out"
	expect_rc 7
	expect_out 'ferry> help' '  echo TEXT .*' 'ferry> echo hello  world' 'hello  world' 'bs' \
		'cpus: 1' 'cmdline: (.* )?shell test' "unknown command 'bogus' \(try help\)" 'exit 3'
	end
fi

if begin serial-file guest; then
	ferry run --engine "$ENGINE" --serial "file:$TMP/console.txt" --kernel "$G/mb_test.elf" --append "exit=0"
	cp "$TMP/out" "$TMP/stdout.txt"
	tr -d '\r' <"$TMP/console.txt" >"$TMP/out" 2>/dev/null
	expect_rc 1
	expect_out 'mb_test ok' 'exiting with 0'
	grep -q 'mb_test' "$TMP/stdout.txt" && fail "the console also went to stdout"
	end
fi

if begin serial-none guest; then
	ferry run --engine "$ENGINE" --serial none --kernel "$G/mb_test.elf" --append "exit=2"
	expect_rc 5
	expect_no_out 'mb_test'
	end
fi

# ---- Debian's Linux 6.1 with a busybox initramfs (scripts/fetch-linux.sh) ----
# Only on the soft engine: this host's nested KVM cannot run a Linux kernel. The kernel and
# initramfs come from FERRY_LINUX_DIR (default: the fetch script's cache); without them the
# cases are skipped with the reason.

LINUX_DIR=${FERRY_LINUX_DIR:-${FERRY_CACHE:-/var/cache/ferry}/linux}
LINUX_WAIT=${FERRY_TEST_LINUX_WAIT:-60} # seconds for a boot to reach the shell
linux_ready() {
	[ -s "$LINUX_DIR/vmlinuz" ] && [ -s "$LINUX_DIR/initramfs.cpio.gz" ]
}
# begin_linux NAME: a Linux case; skipped off the soft engine or without the kernel.
begin_linux() {
	[ "$ENGINE" = soft ] || return 1
	begin "$1" guest || return 1
	if ! linux_ready; then
		echo "SKIP $NAME: no kernel in $LINUX_DIR (run scripts/fetch-linux.sh)"
		SKIPPED=$((SKIPPED + 1))
		RUNNING=0
		return 1
	fi
	return 0
}
# linux_start ARGS...: boots the kernel in the background, console on a FIFO (fd 3) and
# $TMP/out.raw.
linux_start() {
	rm -f "$TMP/in"
	mkfifo "$TMP/in"
	timeout -k 5 "$T" "$FERRY" run --engine "$ENGINE" --serial stdio \
		--kernel "$LINUX_DIR/vmlinuz" --initrd "$LINUX_DIR/initramfs.cpio.gz" "$@" \
		<"$TMP/in" >"$TMP/out.raw" 2>"$TMP/err" &
	BGPID=$!
	exec 3>"$TMP/in"
}
# linux_type LINE N: waits for the Nth shell prompt, then types LINE.
linux_type() {
	if ! wait_for_lines '^(/ )?# ' "$2" "$LINUX_WAIT"; then
		fail "no shell prompt #$2 before typing '$1'"
		return 1
	fi
	printf '%s\r' "$1" >&3
}
linux_finish() {
	wait "$BGPID"
	RC=$?
	exec 3>&-
	BGPID=
	tr -d '\r' <"$TMP/out.raw" | sed 's/\x1b\[[0-9;]*[a-zA-Z]//g' >"$TMP/out"
}

# The workload whose output must match the same busybox run natively.
LINUX_WORK='seq 1 20000 | md5sum; seq 1 3000 | sort -r | sha256sum; seq 1 5000 | gzip -c | gunzip -c | md5sum; echo $((123456789 * 987654321 % 1000003)); seq 1 2000 | awk "{s+=\$1} END {print s}"'

if begin_linux linux-shell; then
	# Boots to the interactive shell, runs commands through the UART, powers off.
	native=$(sh -c "$(echo "$LINUX_WORK" | sed 's/\(seq\|md5sum\|sort\|sha256sum\|gzip\|gunzip\|awk\)/busybox \1/g')" 2>&1)
	linux_start --append "console=ttyS0" -m 256M
	n=0
	for line in 'uname -a' 'grep -c ^processor /proc/cpuinfo; grep -m1 ^flags /proc/cpuinfo' \
		'cat /sys/devices/system/clocksource/clocksource0/current_clocksource' \
		"( $LINUX_WORK ) > /tmp/w; echo work-status \$?; md5sum < /tmp/w" 'poweroff -f'; do
		n=$((n + 1))
		linux_type "$line" "$n" || { kill "$BGPID" 2>/dev/null; break; }
	done
	linux_finish
	expect_rc 0
	expect_out 'ferry-init: up 6\.1\..*' 'Linux .* 6\.1\.[0-9]+-[0-9]+-amd64 .* x86_64 GNU/Linux' \
		'flags.*: fpu .*tsc .*apic .*sse2 .*syscall .*lm .*hypervisor.*' 'kvm-clock' \
		'work-status 0' '\[ *[0-9.]+\] reboot: Power down'
	want=$(printf '%s\n' "$native" | busybox md5sum | cut -d' ' -f1)
	grep -q "^$want  -\$\|^$want\$" "$TMP/out" || fail "the workload's output differs from the native run (native md5 $want)"
	grep -qi 'kernel panic\|BUG:\|Oops' "$TMP/out" && fail "the kernel reported a problem"
	end
fi

if begin_linux linux-reboot; then
	# reboot in the guest restarts it (ACPI reset register); the second boot powers off.
	linux_start --append "console=ttyS0"
	linux_type 'reboot -f' 1 && wait_for_lines 'ferry-init: up' 2 "$LINUX_WAIT" &&
		linux_type 'poweroff -f' 2 || kill "$BGPID" 2>/dev/null
	linux_finish
	expect_rc 0
	[ "$(grep -c 'ferry-init: up' "$TMP/out")" = 2 ] || fail "expected two boots"
	end
fi

if begin_linux linux-decompressor; then
	# The bzImage's own XZ decompressor on the soft CPU, then KASLR and the kernel.
	linux_start --append "console=ttyS0" --linux-entry decompressor
	linux_type 'poweroff -f' 1 || kill "$BGPID" 2>/dev/null
	linux_finish
	expect_rc 0
	expect_out 'ferry-init: up 6\.1\..*' '\[ *[0-9.]+\] reboot: Power down'
	end
fi

# ---- virtio devices under Linux ----

# linux_session ARGS... -- LINES...: boots, types each line at the next prompt, waits for the
# power-off. The last line should power off.
linux_session() {
	local args=()
	while [ $# -gt 0 ] && [ "$1" != -- ]; do
		args+=("$1")
		shift
	done
	shift
	linux_start --append "console=ttyS0" "${args[@]}"
	local n=0 line
	for line in "$@"; do
		n=$((n + 1))
		linux_type "$line" "$n" || { kill "$BGPID" 2>/dev/null; break; }
	done
	linux_finish
}

if begin_linux linux-virtio-blk; then
	# A raw image: make a file system, write, power off; boot again with the disk read-only
	# and read it back. Discard reaches the host file (holes), the rng feeds /dev/hwrng.
	img=$TMP/disk.raw
	truncate -s 64M "$img"
	linux_session --drive "file=$img,format=raw" --rng -- \
		'cat /sys/block/vda/size /sys/block/vda/serial; echo; mke2fs -q /dev/vda && echo mkfs-ok' \
		'mkdir /mnt && mount -t ext2 /dev/vda /mnt && echo hello-virtio > /mnt/hello && dd if=/dev/urandom of=/mnt/big bs=64k count=80 2>/dev/null && md5sum /mnt/big > /mnt/big.md5 && cat /mnt/big.md5 && sync && echo write-ok' \
		'dd if=/dev/urandom of=/mnt/junk bs=64k count=64 2>/dev/null; sync; rm /mnt/junk; fstrim -v /mnt; umount /mnt && echo umount-ok' \
		'cat /sys/class/misc/hw_random/rng_current; head -c 32 /dev/hwrng | md5sum; poweroff -f'
	expect_rc 0
	expect_out 'mkfs-ok' 'write-ok' 'umount-ok' '^131072$' 'ferry-disk0' 'virtio_rng\.0' \
		'/mnt: [0-9]+ bytes trimmed'
	sum1=$(grep -m1 -E '^[0-9a-f]{32}  /mnt/big$' "$TMP/out" | cut -d' ' -f1)
	[ -n "$sum1" ] || fail "no checksum of the written file"
	grep -qi 'kernel panic\|BUG:\|Oops\|I/O error' "$TMP/out" && fail "the kernel reported a problem"
	e2fsck -fn "$img" >"$TMP/fsck" 2>&1 || fail "e2fsck finds the file system written through virtio-blk unclean: $(tail -3 "$TMP/fsck")"
	used=$(du -k "$img" | cut -f1)
	[ "$used" -lt 12000 ] || fail "discarded blocks still take host space ($used KiB allocated)"
	linux_session --drive "file=$img,format=raw,readonly=on" -- \
		'cat /sys/block/vda/ro; mkdir /mnt && mount -t ext2 -o ro /dev/vda /mnt && cat /mnt/hello && md5sum /mnt/big && cat /mnt/big.md5' \
		'dd if=/dev/zero of=/dev/vda bs=512 count=1 2>&1 | tail -1; echo dd-status $?; poweroff -f'
	expect_rc 0
	expect_out '^1$' 'hello-virtio' "^$sum1  /mnt/big"
	[ "$(grep -c "^$sum1  /mnt/big" "$TMP/out")" -ge 2 ] || fail "the file read back differs"
	end
fi

if begin_linux linux-virtio-qcow2; then
	# A qcow2 image made by qemu-img: Linux makes a file system and writes; then qemu-img
	# check finds the image clean and the files are read back on the host.
	if ! command -v qemu-img >/dev/null || ! command -v debugfs >/dev/null; then
		fail "qemu-img or debugfs is missing (run scripts/setup.sh)"
	else
		img=$TMP/disk.qcow2
		qemu-img create -q -f qcow2 "$img" 64M
		linux_session --drive "file=$img,format=qcow2" -- \
			'mke2fs -q /dev/vda && mkdir /mnt && mount -t ext2 /dev/vda /mnt && echo hello-qcow2 > /mnt/hello && dd if=/dev/urandom of=/mnt/big bs=64k count=48 2>/dev/null && md5sum /mnt/big && sync && umount /mnt && echo umount-ok' \
			'poweroff -f'
		expect_rc 0
		expect_out 'umount-ok'
		sum=$(grep -m1 -E '^[0-9a-f]{32}  /mnt/big$' "$TMP/out" | cut -d' ' -f1)
		qemu-img check -q "$img" >"$TMP/check" 2>&1 || fail "qemu-img check: $(head -5 "$TMP/check")"
		qemu-img convert -O raw "$img" "$TMP/flat.raw"
		[ "$(debugfs -R 'cat /hello' "$TMP/flat.raw" 2>/dev/null)" = hello-qcow2 ] ||
			fail "the file written in the guest is not in the image"
		debugfs -R 'dump /big '"$TMP/big" "$TMP/flat.raw" >/dev/null 2>&1
		[ -n "$sum" ] && [ "$(md5sum <"$TMP/big" | cut -d' ' -f1)" = "$sum" ] ||
			fail "the big file in the image differs from what the guest wrote"
	fi
	end
fi

# ---- virtio-net under Linux ----
# The cases leave nothing behind even when they fail or the script is stopped: net_cleanup (also
# run at exit) ends the processes they started and deletes their network namespace, which takes
# its bridge and taps with it. Ports on the host are picked free, on 127.0.0.1 only.

NET_PIDS=() NET_NS=
net_cleanup() {
	local p
	for p in "${NET_PIDS[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${NET_PIDS[@]}"; do wait "$p" 2>/dev/null; done
	NET_PIDS=()
	[ -n "$NET_NS" ] && ip netns del "$NET_NS" 2>/dev/null
	NET_NS=
}
trap 'net_cleanup; cleanup' EXIT
net_free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 40000))
		ss -Hltun "sport = :$p" 2>/dev/null | grep -q . || break
	done
	echo "$p"
}
if begin net-options; then
	# Each bad --net gives exit status 2 and one line that names the option.
	for a in bogus tap tap,ifname= tap,ifname=name-is-too-long tap,ifname=a/b \
		user,mac=01:00:5e:00:00:01 user,mac=52:54:00:12:34 user,hostfwd=tcp::80 \
		user,hostfwd=sctp::1-:2 user,hostfwd=tcp::70000-:80 user,ifname=x \
		tap,ifname=x,hostfwd=tcp::1-:2 user,offload=on tap,ifname=x,offload=maybe user,junk; do
		bad_ferry run --kernel "$G/mb_test.elf" --net "$a"
		[ "$RC" = 2 ] || fail "--net $a: exit status $RC, not 2"
		{ [ "$(wc -l <"$TMP/err")" = 1 ] && grep -q '^ferry: .*--net' "$TMP/err"; } ||
			fail "--net $a: not one line naming --net: $(head -2 "$TMP/err" | tr '\n' ' ')"
	done
	bad_ferry run --kernel "$G/mb_test.elf" --net user --net user --net user --net user --net user
	expect_rc 2
	expect_err_one_line
	expect_err 'too many --net'
	end
fi

if begin net-backend-errors guest; then
	# A backend that cannot open stops ferry before the guest runs, saying why (status 1: a
	# host port in use).
	port=$(net_free_port)
	ferry_guest --kernel "$G/mb_test.elf" --net "user,hostfwd=tcp:127.0.0.1:$port-:22,hostfwd=tcp:127.0.0.1:$port-:23"
	expect_rc 1
	expect_err "hostfwd=tcp:127.0.0.1:$port-:23: cannot listen on host port $port"
	if [ -w /dev/net/tun ]; then
		# Naming an interface that is not a tap is bad input.
		ferry_guest --kernel "$G/mb_test.elf" --net tap,ifname=lo
		expect_rc 2
		expect_err_one_line
		expect_err 'tap lo: cannot attach'
	fi
	end
fi

NET_UP='ip addr add 10.0.2.15/24 dev eth0 && ip link set eth0 up && ip route add default via 10.0.2.2'
NET_SERVE='mkdir /www && dd if=/dev/urandom of=/www/blob bs=1k count=256 2>/dev/null && md5sum /www/blob && httpd -p 80 -h /www && echo srv-ready'

if begin_linux linux-virtio-net-user; then
	# The guest fetches a file from a web server on the host through the NAT (10.0.2.2 is the
	# host's loopback), with the default MAC address.
	mkdir -p "$TMP/www"
	head -c 262144 /dev/urandom >"$TMP/www/blob"
	sum=$(md5sum <"$TMP/www/blob" | cut -d' ' -f1)
	port=$(net_free_port)
	busybox httpd -f -p "127.0.0.1:$port" -h "$TMP/www" &
	NET_PIDS+=($!)
	linux_session --net user -- \
		"cat /sys/class/net/eth0/address; $NET_UP && echo net-up" \
		"timeout 60 wget -q -O /tmp/blob http://10.0.2.2:$port/blob; echo wget-status \$?; md5sum /tmp/blob" \
		'poweroff -f'
	net_cleanup
	expect_rc 0
	expect_out '52:54:00:12:34:56' 'net-up' 'wget-status 0' "$sum  /tmp/blob"
	grep -qi 'kernel panic\|BUG:\|Oops' "$TMP/out" && fail "the kernel reported a problem"
	end
fi

if begin_linux linux-virtio-net-hostfwd; then
	# The guest serves a file; the host fetches it through a forwarded port.
	port=$(net_free_port)
	linux_start --append "console=ttyS0" --net "user,mac=52:54:00:aa:bb:cc,hostfwd=tcp:127.0.0.1:$port-:80"
	if linux_type "cat /sys/class/net/eth0/address; $NET_UP && $NET_SERVE" 1 &&
		wait_for_lines '^srv-ready' 1 "$LINUX_WAIT"; then
		timeout 60 busybox wget -q -O "$TMP/got" "http://127.0.0.1:$port/blob" ||
			fail "the host could not fetch through the forwarded port"
	else
		fail "the guest's web server did not start"
	fi
	linux_type 'poweroff -f' 2 || kill "$BGPID" 2>/dev/null
	linux_finish
	expect_rc 0
	expect_out '52:54:00:aa:bb:cc'
	gsum=$(grep -m1 -E '^[0-9a-f]{32}  /www/blob$' "$TMP/out" | cut -d' ' -f1)
	[ -n "$gsum" ] && [ -s "$TMP/got" ] && [ "$(md5sum <"$TMP/got" | cut -d' ' -f1)" = "$gsum" ] ||
		fail "what the host fetched differs from the guest's file"
	end
fi

# Two guests at once in NET_NS: net_guest_start NAME FD ARGS... boots one with its console on
# the FIFO $TMP/in.NAME (open as fd FD) and $TMP/out.NAME.raw; net_type NAME FD LINE N waits
# for its Nth prompt and types LINE.
net_wait() { # FILE REGEX N SECONDS
	local i=0
	while [ $i -lt $(($4 * 10)) ]; do
		[ "$(tr -d '\r' <"$1" | grep -Ec -- "$2")" -ge "$3" ] && return 0
		sleep 0.1
		i=$((i + 1))
	done
	return 1
}
net_guest_start() {
	local g=$1 fd=$2
	shift 2
	rm -f "$TMP/in.$g"
	mkfifo "$TMP/in.$g"
	ip netns exec "$NET_NS" timeout -k 5 "$NET_T" "$FERRY" run --engine "$ENGINE" \
		--serial stdio --kernel "$LINUX_DIR/vmlinuz" --initrd "$LINUX_DIR/initramfs.cpio.gz" \
		--append console=ttyS0 "$@" <"$TMP/in.$g" >"$TMP/out.$g.raw" 2>"$TMP/err.$g" &
	NET_PIDS+=($!)
	eval "exec $fd>\"\$TMP/in.\$g\""
}
net_type() {
	if ! net_wait "$TMP/out.$1.raw" '^(/ )?# ' "$4" "$NET_WAIT"; then
		fail "guest $1: no shell prompt #$4 before typing '$3'"
		return 1
	fi
	printf '%s\r' "$3" >&"$2"
}

if begin_linux linux-virtio-net-tap; then
	# Two guests on taps in one bridge, in a network namespace of their own: B fetches a file
	# from A's web server (A has offloads on, B off), and A pings B.
	NET_NS=ferry-it-$$ NET_T=$((T * 4)) NET_WAIT=$((LINUX_WAIT * 3))
	if [ "$(id -u)" != 0 ] || [ ! -w /dev/net/tun ] || ! command -v ip >/dev/null; then
		echo "SKIP $NAME: needs root, /dev/net/tun and ip (iproute2)"
		SKIPPED=$((SKIPPED + 1))
		RUNNING=0 NET_NS=
	elif ! ip netns add "$NET_NS" 2>"$TMP/err"; then
		NET_NS=
		fail "cannot make a network namespace"
	elif ! { ip -n "$NET_NS" link add fbr0 type bridge &&
		ip -n "$NET_NS" tuntap add dev fta0 mode tap &&
		ip -n "$NET_NS" tuntap add dev fta1 mode tap &&
		ip -n "$NET_NS" link set fta0 master fbr0 &&
		ip -n "$NET_NS" link set fta1 master fbr0 &&
		ip -n "$NET_NS" link set fta0 up && ip -n "$NET_NS" link set fta1 up &&
		ip -n "$NET_NS" link set fbr0 up; } 2>"$TMP/err"; then
		fail "cannot make the bridge and taps"
	else
		net_guest_start a 4 --net tap,ifname=fta0,mac=52:54:00:77:00:01
		net_guest_start b 5 --net tap,ifname=fta1,mac=52:54:00:77:00:02,offload=off
		net_type a 4 "ip addr add 192.168.77.1/24 dev eth0 && ip link set eth0 up && $NET_SERVE" 1 &&
			{ net_wait "$TMP/out.a.raw" '^srv-ready' 1 "$NET_WAIT" || fail "A's web server did not start"; } &&
			net_type b 5 'ip addr add 192.168.77.2/24 dev eth0 && ip link set eth0 up && timeout 90 wget -q -O /tmp/blob http://192.168.77.1/blob; echo wget-status $?; md5sum /tmp/blob' 1 &&
			{ net_wait "$TMP/out.b.raw" '^wget-status [0-9]+$' 1 "$NET_WAIT" || fail "B's fetch did not end"; } &&
			net_type a 4 'ping -c 2 -W 30 192.168.77.2 >/dev/null; echo ping-status $?' 2 &&
			net_type a 4 'poweroff -f' 3 && net_type b 5 'poweroff -f' 2
		[ -n "$WHY" ] && kill "${NET_PIDS[@]}" 2>/dev/null
		wait "${NET_PIDS[0]}"
		rca=$?
		wait "${NET_PIDS[1]}"
		rcb=$?
		exec 4>&- 5>&-
		RC="$rca/$rcb"
		for g in a b; do
			tr -d '\r' <"$TMP/out.$g.raw" | sed "s/\x1b\[[0-9;]*[a-zA-Z]//g; s/^/$g: /"
			sed "s/^/$g: /" "$TMP/err.$g"
		done >"$TMP/out"
		[ "$RC" = 0/0 ] || fail "expected both guests to exit with status 0"
		expect_out 'b: wget-status 0' 'a: ping-status 0'
		asum=$(grep -m1 -E '^a: [0-9a-f]{32}  /www/blob$' "$TMP/out" | cut -d' ' -f2)
		[ -n "$asum" ] && grep -q "^b: $asum  /tmp/blob\$" "$TMP/out" ||
			fail "the file B received differs from A's"
		grep -qi 'kernel panic\|BUG:\|Oops' "$TMP/out" && fail "a kernel reported a problem"
	fi
	net_cleanup
	end
fi

if begin_linux linux-virtio-console; then
	# --console virtio: the chardev is a virtio-console's, the shell runs on hvc0 (console=hvc0
	# makes it /dev/console once the module is in), typed input and output go through stdio;
	# the UART is still there for the guest but connected to nothing.
	linux_start --console virtio --append "console=hvc0"
	linux_type 'cat /sys/class/tty/console/active; uname -r; echo hvc-$((6 * 7))' 1 &&
		linux_type 'echo uart-$((6 * 7)) > /dev/ttyS0; echo uart-status $?' 2 &&
		linux_type 'poweroff -f' 3 || kill "$BGPID" 2>/dev/null
	linux_finish
	expect_rc 0
	expect_out 'hvc0' '6\.1\.[0-9]+-[0-9]+-amd64' 'hvc-42' 'uart-status 0'
	grep -q 'uart-42' "$TMP/out" && fail "the UART's output reached the chardev"
	grep -qi 'kernel panic\|BUG:\|Oops' "$TMP/out" && fail "the kernel reported a problem"
	end
fi

echo
if [ $SKIPPED -gt 0 ]; then
	echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
else
	echo "$PASSED passed, $FAILED failed"
fi
[ $FAILED = 0 ]
