# Becomes systemd, as PID 1 of a private PID namespace, over a throw-away overlay of /.
#
# tests/test_systemd_boot.py starts it as
#   unshare --pid --fork --kill-child --mount --cgroup --uts --ipc --propagation private \
#       sh boot.sh WORK PAYLOAD CONSOLE [PYTHON_HOME]
# so it runs as PID 1 in new PID, mount, cgroup, UTS and IPC namespaces (the network
# namespace is the host's: the test's sandbox API on 127.0.0.1 is reachable).
#
# WORK         an empty directory; a tmpfs goes on it, holding the overlay's upper layer
# PAYLOAD      a tree copied over the new root: the unit, its drop-in, the configuration,
#              the credential, the boot target
# CONSOLE      a file that becomes /dev/console
# PYTHON_HOME  an interpreter that ProtectHome= would hide (under /root or /home): it is
#              bound read-only at /opt/rotator-python and registered with ldconfig, as if
#              installed there (the payload points the venv at it)
#
# Nothing here touches the host: every mount is made in this private mount namespace
# and every write lands in the tmpfs upper layer. As systemd-nspawn does, /sys and
# /proc/sys are read-only (systemd-sysctl, udev and binfmt skip themselves), /dev is a
# private tmpfs with a few bound device nodes, and the capabilities that reach beyond a
# container are dropped from the bounding set (module loading, the clock, raw I/O...).
set -eux
work=$1
payload=$2
console=$3
python_home=${4:-}

mount -t tmpfs -o mode=0755 rotator-boot "$work"
mkdir "$work/upper" "$work/work" "$work/root"
mount -t overlay -o "lowerdir=/,upperdir=$work/upper,workdir=$work/work" rotator-root "$work/root"
root=$work/root
cp -R --no-dereference --preserve=mode --remove-destination "$payload/." "$root/"

mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
mount --bind "$root/proc/sys" "$root/proc/sys"
mount -o remount,bind,ro "$root/proc/sys"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$root/sys"
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$root/sys/fs/cgroup"
mount -t tmpfs -o mode=0755,nosuid,nodev rotator-run "$root/run"
mount -t tmpfs -o mode=1777,nosuid,nodev rotator-tmp "$root/tmp"

dev=$root/dev
mount -t tmpfs -o mode=0755,nosuid rotator-dev "$dev"
for node in null zero full random urandom tty; do
    : > "$dev/$node"
    mount --bind "/dev/$node" "$dev/$node"
done
: > "$dev/console"
mount --bind "$console" "$dev/console"
mkdir "$dev/pts" "$dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$dev/pts"
ln -s pts/ptmx "$dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev rotator-shm "$dev/shm"
ln -s /proc/self/fd "$dev/fd"
ln -s /proc/self/fd/0 "$dev/stdin"
ln -s /proc/self/fd/1 "$dev/stdout"
ln -s /proc/self/fd/2 "$dev/stderr"

if [ -n "$python_home" ]; then
    mkdir -p "$root/opt/rotator-python"
    mount --bind "$python_home" "$root/opt/rotator-python"
    mount -o remount,bind,ro "$root/opt/rotator-python"
    ldconfig -r "$root"
fi

mkdir "$root/.oldroot"
cd "$root"
pivot_root . .oldroot
umount -l /.oldroot
rmdir /.oldroot
cd /
# As systemd-nspawn does (systemd makes / shared itself only outside containers): the
# credentials of LoadCredential= are mounted in a helper namespace and must propagate
# back. These are new peer groups of this namespace; the host's mounts were copied private.
mount --make-rshared /

exec setpriv \
    --bounding-set -sys_module,-sys_time,-sys_rawio,-wake_alarm,-syslog,-audit_control,-audit_read,-mac_admin,-mac_override \
    env container=rotator-test \
    /lib/systemd/systemd --unit=rotator-boot.target --show-status=no --log-level=debug
