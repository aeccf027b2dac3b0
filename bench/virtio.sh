#!/usr/bin/env bash
# virtio device throughput: ferry's soft engine against QEMU TCG, the same Debian kernel (bzImage)
# and busybox initramfs (scripts/fetch-linux.sh) on both, side by side in one run.
#   disk      /init's ferry.run=disk: a sequential O_DIRECT write (flushed) then read of /dev/vda,
#             bs=1M, timed inside the guest by its monotonic clock; a virtio-blk PCI device on a
#             raw image (made with truncate) and on a qcow2 image (qemu-img create), each fresh
#             for every run. QEMU has -M pc with a modern-only virtio-blk-pci on its default cache
#             mode (writeback: both engines go through the host's page cache, and both fdatasync
#             on the guest's flush).
#   net       /init's ferry.run=net: TCP throughput between the host and the guest over a
#             virtio-net PCI device (modern-only on QEMU), BENCH_NET_MB MiB each way in one boot:
#             host -> guest, the host connecting to the guest's busybox nc -l, then guest -> host,
#             the guest's nc sending /dev/zero to a port the host listens on. nc -e hands the
#             guest's socket to dd, whose 1 MiB reads and writes keep the guest's system calls
#             from setting the pace. Both directions are timed on the host (python3), from the
#             connection's start to the last byte's arrival (inward: to the guest's EOF, which
#             its dd gives once it has read all). Backends: user-mode NAT (a forwarded port on
#             127.0.0.1), and a TAP device in a network namespace of the benchmark's own (as
#             root, with /dev/net/tun and ip; the host's end of it takes the NAT's host address,
#             10.0.2.2, so the guest's side is the same).
# Runs alternate between the engines so that a busy host's drift hits both alike. Prints MiB/s
# from the medians of BENCH_RUNS runs and the ratios ferry/qemu of the times (lower is better for
# ferry). After each of ferry's qcow2 runs the image must pass `qemu-img check`.
#
# Usage: bench/virtio.sh [FERRY_BINARY]     (default build/ferry)
# Env:   BENCH_RUNS (default 3), BENCH_DISK_MB (default 128), BENCH_NET_MB (default 64),
#        BENCH_NET (the network backends, default "user tap"; empty: no network figures),
#        BENCH_TIMEOUT (seconds per VM, default 300), QEMU_SYSTEM (default qemu-system-x86_64),
#        QEMU_IMG (default qemu-img), FERRY_CACHE (as scripts/fetch-linux.sh)
set -u
export LC_ALL=C

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
FERRY_ARG=${1:-$ROOT/build/ferry}
if [ $# -gt 1 ] || [ ! -x "$FERRY_ARG" ]; then
	echo "usage: $0 [FERRY_BINARY]   (build it with: make)" >&2
	exit 2
fi
FERRY=$(cd "$(dirname "$FERRY_ARG")" && pwd)/$(basename "$FERRY_ARG")
RUNS=${BENCH_RUNS:-3}
MB=${BENCH_DISK_MB:-128}
NET_MB=${BENCH_NET_MB:-64}
NETS=${BENCH_NET-user tap}
TMO=${BENCH_TIMEOUT:-300}
QEMU=${QEMU_SYSTEM:-qemu-system-x86_64}
QIMG=${QEMU_IMG:-qemu-img}
for v in BENCH_DISK_MB=$MB BENCH_NET_MB=$NET_MB; do
	case ${v#*=} in
	'' | 0* | *[!0-9]*)
		echo "bench-virtio: ${v%%=*} must be a positive number of MiB" >&2
		exit 2
		;;
	esac
done
for b in $NETS; do
	case $b in
	user | tap) ;;
	*)
		echo "bench-virtio: BENCH_NET takes user and tap, not '$b'" >&2
		exit 2
		;;
	esac
done

"$ROOT/scripts/fetch-linux.sh" >/dev/null || exit 1
L=${FERRY_CACHE:-/var/cache/ferry}/linux
TMP=$(mktemp -d "${TMPDIR:-/tmp}/ferry-bench-virtio.XXXXXX")
# The TAP runs' network namespace goes with its tap device; HOST_PID is a running host side.
NETNS="" HOST_PID=""
cleanup() {
	[ -n "$HOST_PID" ] && kill "$HOST_PID" 2>/dev/null
	[ -n "$NETNS" ] && ip netns del "$NETNS" 2>/dev/null
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# QEMU, and qemu-img for the qcow2 images (Debian's qemu-utils; also what `check` needs).
have() { command -v "$1" >/dev/null 2>&1; }
find_tool() { # command default-command package: installs the package for the default as root
	have "$1" && return 0
	{ [ "$1" = "$2" ] && [ "$(id -u)" = 0 ]; } || return 1
	echo "bench-virtio: installing $3" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$3" >/dev/null 2>&1
	have "$1"
}
HAVE_QEMU=1 HAVE_QIMG=1
find_tool "$QEMU" qemu-system-x86_64 qemu-system-x86 || HAVE_QEMU=0
find_tool "$QIMG" qemu-img qemu-utils || HAVE_QIMG=0
FORMATS="raw"
[ $HAVE_QIMG = 1 ] && FORMATS="raw qcow2"
ENGINES="ferry"
[ $HAVE_QEMU = 1 ] && ENGINES="ferry qemu"

APPEND="console=ttyS0 quiet ferry.run=disk ferry.disk_mb=$MB"
IMG=$TMP/disk.img
# Both drive syntaxes take ',,' for a comma in the path.
DRIVE=${IMG//,/,,}

make_image() { # format
	rm -f "$IMG"
	if [ "$1" = qcow2 ]; then
		"$QIMG" create -q -f qcow2 "$IMG" "${MB}M"
	else
		truncate -s "${MB}M" "$IMG"
	fi
}
# The VM command line for one engine and image format, into CMD.
vm_cmd() { # engine format
	if [ "$1" = ferry ]; then
		CMD=("$FERRY" run --engine soft --serial stdio -m 256M --kernel "$L/vmlinuz"
			--initrd "$L/initramfs.cpio.gz" --append "$APPEND" --drive "file=$DRIVE,format=$2")
	else
		CMD=("$QEMU" -M pc -accel tcg -m 256M -nodefaults -no-user-config -nographic
			-serial stdio -no-reboot -kernel "$L/vmlinuz" -initrd "$L/initramfs.cpio.gz"
			-append "$APPEND" -drive "file=$DRIVE,format=$2,if=none,id=d0"
			-device "virtio-blk-pci,drive=d0,disable-legacy=on")
	fi
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR ? v[int((NR + 1) / 2)] : 0) }'; }

# T[engine.format.op]: the guest's times (s) of every run that reported one, a line each.
declare -A T
QCOW2_OK=yes MISSING=0
echo "bench-virtio: $(cat "$L/version"), virtio-blk on a $MB MiB image, $RUNS runs each, medians"
for ((i = 0; i < RUNS; i++)); do
	for fmt in $FORMATS; do
		for eng in $ENGINES; do
			make_image "$fmt" || { echo "bench-virtio: cannot make a $fmt image" >&2; exit 1; }
			vm_cmd "$eng" "$fmt"
			timeout -k 5 "$TMO" "${CMD[@]}" </dev/null 2>&1 | tr -d '\r' >"$TMP/console"
			rc=${PIPESTATUS[0]}
			for op in write read; do
				t=$(sed -n "s/^.*ferry-bench: disk $op $MB MiB in \([0-9.]*\) s\$/\1/p" "$TMP/console")
				if [ -n "$t" ]; then
					T[$eng.$fmt.$op]+="$t"$'\n'
				else
					MISSING=1
					echo "bench-virtio: $eng on $fmt, run $((i + 1)): no disk $op figure" \
						"(exit status $rc); the console's end:" >&2
					tail -n 5 "$TMP/console" | sed 's/^/    /' >&2
				fi
			done
			if [ "$eng" = ferry ] && [ "$fmt" = qcow2 ] &&
				! "$QIMG" check -q "$IMG" >"$TMP/check" 2>&1; then
				QCOW2_OK=no
				echo "bench-virtio: WARNING: the qcow2 image fails 'qemu-img check' after" \
					"ferry's run $((i + 1)):" >&2
				sed 's/^/    /' "$TMP/check" >&2
			fi
		done
	done
done

# MiB/s from a median time, and the ratio of two (n/a when no run reported a time).
pos() { [ "$(echo "$1 > 0" | bc -l)" = 1 ]; }
rate() { pos "$1" && printf '%.1f' "$(echo "$MB / $1" | bc -l)" || echo n/a; }
ratio() { pos "$1" && pos "$2" && printf '%.2f' "$(echo "$1 / $2" | bc -l)" || echo n/a; }
echo
printf '%-26s %12s %12s %12s\n' "" "ferry" "qemu-tcg" "ferry/qemu"
for fmt in $FORMATS; do
	for op in write read; do
		f=$(printf '%s' "${T[ferry.$fmt.$op]:-}" | median)
		q=$(printf '%s' "${T[qemu.$fmt.$op]:-}" | median)
		printf '%-26s %12s %12s %12s\n' "$fmt $op (MiB/s)" "$(rate "$f")" "$(rate "$q")" \
			"$(ratio "$f" "$q")"
	done
done
echo "MiB/s of O_DIRECT 1 MiB requests timed in the guest; ferry/qemu is the ratio of the times"
echo "(below 1: ferry is faster). Reads come from the host's page cache, so they measure each"
echo "engine's request path and its emulated CPU; writes end with the flush's fdatasync, so they"
echo "also include the host's disk."
[ $HAVE_QIMG = 1 ] && echo "qcow2 images after ferry's runs pass 'qemu-img check': $QCOW2_OK"
[ $HAVE_QIMG = 1 ] || echo "$QIMG is not installed: no qcow2 figures (scripts/setup.sh --bench)"
[ $HAVE_QEMU = 1 ] || echo "$QEMU is not installed: no ratios (scripts/setup.sh --bench)"

# ---- TCP throughput (virtio-net) ----
# The host's side of one boot of ferry.run=net, in python3: listens on a free port of LHOST (and
# writes its number to PORTFILE, for the guest's command line); waits for the guest's console to
# say that nc listens, then connects to FHOST:FPORT, retrying until the guest's line comes back
# (the NAT accepts for the guest before the guest does); sends BYTES and half-closes; the guest's
# EOF ends the time. Then takes the guest's connection, reads BYTES (the time ends with the last)
# and answers "done", on which the guest closes. Prints "h2g SECONDS BYTES" and
# "g2h SECONDS BYTES"; gives up after LIMIT seconds.
cat >"$TMP/nethost.py" <<'EOF'
import os, socket, sys, time

console, fhost, fport, lhost, portfile, nbytes, limit = sys.argv[1:]
fport, nbytes = int(fport), int(nbytes)
deadline = time.monotonic() + float(limit)


def left():
    r = deadline - time.monotonic()
    if r <= 0:
        sys.exit("nethost: out of time")
    return r


ls = socket.create_server((lhost, 0))
with open(portfile + ".new", "w") as f:
    f.write("%d\n" % ls.getsockname()[1])
os.rename(portfile + ".new", portfile)

while True:
    with open(console, "rb") as f:
        if b"ferry-bench: net listening" in f.read():
            break
    left()
    time.sleep(0.05)

buf = bytearray(1 << 20)
while True:
    s = socket.socket()
    try:
        s.settimeout(min(left(), 10))
        s.connect((fhost, fport))
        s.settimeout(left())
        hello = b""
        while not hello.endswith(b"\n"):
            c = s.recv(64)
            if not c:
                break
            hello += c
        if hello == b"ready\n":
            break
    except (ConnectionError, socket.timeout):
        pass
    s.close()
    left()
    time.sleep(0.1)
t0 = time.monotonic()
view, sent = memoryview(buf), 0
while sent < nbytes:
    n = min(len(buf), nbytes - sent)
    s.sendall(view[:n])
    sent += n
s.shutdown(socket.SHUT_WR)
while s.recv(65536):
    pass
print("h2g %.6f %d" % (time.monotonic() - t0, sent), flush=True)
s.close()

ls.settimeout(left())
c, _ = ls.accept()
t0 = time.monotonic()
c.settimeout(left())
got = 0
while got < nbytes:
    n = c.recv_into(view)
    if not n:
        break
    got += n
print("g2h %.6f %d" % (time.monotonic() - t0, got), flush=True)
# The guest powers off once told that everything arrived.
c.sendall(b"done\n")
while c.recv(64):
    pass
c.close()
EOF

NET_BYTES=$((NET_MB * 1048576))
HAVE_PY=1
have python3 || HAVE_PY=0
# The TAP backend: a namespace with a persistent tap whose host end is 10.0.2.2, the NAT's
# address for the host, so that the guest's side is the same on both backends.
NET_ON=
for b in $NETS; do
	if [ $HAVE_PY = 0 ]; then
		break
	elif [ "$b" = user ]; then
		NET_ON+=" user"
	elif [ "$(id -u)" != 0 ] || [ ! -w /dev/net/tun ] || ! have ip; then
		echo "bench-virtio: no TAP figures: they need root, /dev/net/tun and ip (iproute2)" >&2
	elif ip netns add "ferry-bench-$$" 2>"$TMP/err" && NETNS=ferry-bench-$$ &&
		ip -n "$NETNS" link set lo up 2>>"$TMP/err" &&
		ip -n "$NETNS" tuntap add dev fbt0 mode tap 2>>"$TMP/err" &&
		ip -n "$NETNS" addr add 10.0.2.2/24 dev fbt0 2>>"$TMP/err" &&
		ip -n "$NETNS" link set fbt0 up 2>>"$TMP/err"; then
		NET_ON+=" tap"
	else
		echo "bench-virtio: no TAP figures: cannot make the namespace and its tap:" \
			"$(head -n 1 "$TMP/err")" >&2
	fi
done

# The VM command line for one engine, backend and the host's port, into CMD.
net_cmd() { # engine backend hostfwd-port host-port
	local append="console=ttyS0 quiet ferry.run=net ferry.net_mb=$NET_MB ferry.net_port=$4"
	local fwd=hostfwd=tcp:127.0.0.1:$3-:5001
	CMD=()
	[ "$2" = tap ] && CMD=(ip netns exec "$NETNS")
	if [ "$1" = ferry ]; then
		CMD+=("$FERRY" run --engine soft --serial stdio -m 256M --kernel "$L/vmlinuz"
			--initrd "$L/initramfs.cpio.gz" --append "$append")
		if [ "$2" = tap ]; then
			CMD+=(--net "tap,ifname=fbt0")
		else
			CMD+=(--net "user,$fwd")
		fi
	else
		CMD+=("$QEMU" -M pc -accel tcg -m 256M -nodefaults -no-user-config -nographic
			-serial stdio -no-reboot -kernel "$L/vmlinuz" -initrd "$L/initramfs.cpio.gz"
			-append "$append" -device "virtio-net-pci,netdev=n0,disable-legacy=on")
		if [ "$2" = tap ]; then
			CMD+=(-netdev "tap,id=n0,ifname=fbt0,script=no,downscript=no")
		else
			CMD+=(-netdev "user,id=n0,$fwd")
		fi
	fi
}
# A port on 127.0.0.1 that nothing listens on now, for the NAT's forward.
free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# One boot: the times of both directions into T[engine.backend.h2g] and [.g2h].
net_run() { # engine backend run
	local fwd="" fhost=10.0.2.15 fport=5001 lhost=10.0.2.2 i=0 rc dir t n
	local -a host=(python3 "$TMP/nethost.py")
	if [ "$2" = user ]; then
		fwd=$(free_port) fhost=127.0.0.1 lhost=127.0.0.1 fport=$fwd
	else
		host=(ip netns exec "$NETNS" "${host[@]}")
	fi
	: >"$TMP/console.raw"
	rm -f "$TMP/port"
	"${host[@]}" "$TMP/console.raw" "$fhost" "$fport" "$lhost" "$TMP/port" \
		"$NET_BYTES" "$TMO" >"$TMP/host" 2>&1 &
	HOST_PID=$!
	while [ ! -s "$TMP/port" ] && [ $i -lt 100 ] && kill -0 "$HOST_PID" 2>/dev/null; do
		sleep 0.1
		i=$((i + 1))
	done
	if [ -s "$TMP/port" ]; then
		net_cmd "$1" "$2" "$fwd" "$(cat "$TMP/port")"
		# The console goes straight to its file: the host side watches it for the guest's line.
		timeout -k 5 "$TMO" "${CMD[@]}" </dev/null >"$TMP/console.raw" 2>&1
		rc=$?
	else
		rc="none (the host side did not start)"
	fi
	# By now the host side has printed both figures and is ending, or it is waiting in vain.
	kill "$HOST_PID" 2>/dev/null
	wait "$HOST_PID" 2>/dev/null
	HOST_PID=
	for dir in h2g g2h; do
		read -r t n < <(sed -n "s/^$dir \([0-9.]*\) \([0-9]*\)\$/\1 \2/p" "$TMP/host")
		if [ "${n:-}" = "$NET_BYTES" ]; then
			T[$1.$2.$dir]+="$t"$'\n'
		else
			MISSING=1
			echo "bench-virtio: $1 on $2, run $3: no $dir figure (exit status $rc);" \
				"the host side said: $(tr '\n' ' ' <"$TMP/host" | tail -c 300)" >&2
			echo "    the console's end:" >&2
			tr -d '\r' <"$TMP/console.raw" | tail -n 5 | sed 's/^/    /' >&2
		fi
		t="" n=""
	done
}

if [ -n "$NET_ON" ]; then
	echo
	echo "bench-virtio: virtio-net, TCP, $NET_MB MiB each way over$NET_ON, $RUNS runs each, medians"
	for ((i = 0; i < RUNS; i++)); do
		for b in $NET_ON; do
			for eng in $ENGINES; do
				net_run "$eng" "$b" $((i + 1))
			done
		done
	done
	echo
	printf '%-26s %12s %12s %12s\n' "" "ferry" "qemu-tcg" "ferry/qemu"
	for b in $NET_ON; do
		for dir in h2g g2h; do
			f=$(printf '%s' "${T[ferry.$b.$dir]:-}" | median)
			q=$(printf '%s' "${T[qemu.$b.$dir]:-}" | median)
			[ $dir = h2g ] && what="host->guest" || what="guest->host"
			printf '%-26s %12s %12s %12s\n' "$b $what (MiB/s)" "$(MB=$NET_MB rate "$f")" \
				"$(MB=$NET_MB rate "$q")" "$(ratio "$f" "$q")"
		done
	done
	echo "MiB/s of one TCP connection each way, timed on the host from its start to the last byte's"
	echo "arrival; in the guest, busybox nc -e dd with 1 MiB reads and writes. Over user (the NAT)"
	echo "the host's end is a forwarded port on 127.0.0.1; over tap, a tap device in a namespace of"
	echo "its own, with the offloads on (ferry's default; QEMU's vnet_hdr)."
fi
[ -n "$NETS" ] && [ $HAVE_PY = 0 ] && echo "python3 is not installed: no TCP figures"

# A run without figures or a damaged qcow2 image fails the benchmark.
[ $MISSING = 0 ] && [ $QCOW2_OK = yes ]
