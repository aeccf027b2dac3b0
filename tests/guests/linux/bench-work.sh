# The CPU-bound busybox workload that bench/linux.sh times inside the guest (ferry.run=work in
# /init), natively and under QEMU: the same commands, the same generated input.
seq 1 200000 >/tmp/d
md5sum /tmp/d
sha256sum /tmp/d
gzip -c /tmp/d | gunzip -c | md5sum
sort -r /tmp/d | md5sum
awk '{ s += $1 * 3 } END { print s }' /tmp/d
i=0
while [ $i -lt 20000 ]; do i=$((i + 1)); done
echo "loop $i"
