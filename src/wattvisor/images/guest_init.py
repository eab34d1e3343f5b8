"""The ``/init`` of the tiny guest: a busybox shell script driven by the kernel command line.

Everything the guest does is chosen with ``wv.*`` kernel parameters so one
image serves every test and the ready image of ``wattvisor up``:

- ``wv.scenario=share wv.tag=<mount tag> wv.file=<name> wv.pause=<s>``: mount
  the virtiofs tag on /mnt, read ``wv.file`` twice ``wv.pause`` seconds apart,
  try to create a file and to overwrite ``wv.file``, report each result, power off.
- ``wv.scenario=busy`` (optionally with ``wv.tag``/``wv.file``/``wv.interval``):
  spin one CPU forever, printing the shared file every ``wv.interval`` seconds;
  without a tag, print a counter instead (``WV-TICK n=<1, 2, ...>``), so a test sees
  the guest run on through a live migration.
- ``wv.scenario=idle``: sleep forever.
- ``wv.scenario=cdrom wv.file=<path>``: mount the first ISO9660 cdrom read-only
  on /cdrom, list it and print ``wv.file`` from it, power off.
- ``wv.scenario=disks`` (optionally ``wv.file=<block device>``): list the block
  devices (``WV-DISKS [name:sectors:serial|...]``), find the disks labelled
  ``ephemeral0`` and ``swap`` (``WV-LABELS``), turn that swap on (``WV-SWAPON``),
  print the printable bytes at the start of
  ``/dev/<wv.file>`` (``WV-DISK-HEAD``), then idle.
- ``wv.scenario=devices`` (optionally ``wv.block=<name>``): what hardware the guest
  sees: one ``WV-PCI`` line per PCI function (``vendor:device`` and class, from
  /sys/bus/pci/devices), then ``WV-BLOCK`` (/sys/block) and ``WV-NETDEVS``
  (/sys/class/net), power off. With ``wv.block`` it first waits up to 10 s for that
  block device (SCSI and USB disks appear after a bus scan).
- ``wv.scenario=poweroff``: power off right after booting (a guest stopping by
  itself while the host acts on it).
- ``wv.scenario=metrics`` (optionally ``wv.interval``): what a wattvisor server with
  power metrics does on its own: mount the config drive, find the share whose
  purpose is ``power_metrics`` in ``openstack/latest/meta_data.json``, mount that
  tag with virtiofs and print ``intel-rapl:0/energy_uj`` every ``wv.interval``
  seconds, forever (``WV-ENERGY``). When a read fails (the share was unplugged for a
  live migration) it prints ``WV-ENERGY-FAILED``, drops the mount and mounts the tag
  again once it is back (``WV-REMOUNTED``). Without such a share it says so and idles.

In every scenario, a guest with a network interface first configures it from the
config drive's ``openstack/latest/network_data.json`` (static addresses, default
routes; the interface is the one whose MAC the document names) and prints
``WV-NET nic=... mac=... ipv4=<addr>/<prefix> ipv6=<addr>/<prefix>`` (or
``WV-NET-FAILED``), then serves HTTP on port 9100 with busybox ``httpd``:
``/metrics`` (redirected to ``/metrics/``) answers ``wv_guest_up 1`` in the
Prometheus text format, ``/`` a short page naming the server; ``WV-HTTP port=9100``
says it listens. A guest without an interface prints ``WV-NET-NONE``.

In every scenario the guest powers off when asked through ACPI (the power
button that libvirt's ``shutdown`` presses): busybox ``acpid`` runs
``/etc/acpi/PWRF/00000080``, which prints ``WV-POWER-BUTTON`` and powers off.

Every step prints one line starting with ``WV-`` on the serial console, so a
test can wait for a marker instead of sleeping. Values are printed between
``[`` and ``]`` with newlines folded to ``|``. Bump :data:`INIT_VERSION` on any
change: it is part of the image's cache key.
"""

from __future__ import annotations

INIT_VERSION = 11

INIT_SCRIPT = r"""#!/bin/busybox sh
# wattvisor tiny guest init, version @INIT_VERSION@
/bin/busybox mkdir -p /proc /sys /dev /tmp /mnt /cdrom /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp

say() { echo "$*"; }
oneline() { tr '\n' '|' | sed 's/|$//'; }
finish() {
    say "WV-DONE scenario=$scenario"
    sync
    poweroff -f
    while :; do sleep 3600; done
}

param() {
    for arg in $(cat /proc/cmdline); do
        case "$arg" in
            "$1"=*) echo "${arg#*=}"; return 0 ;;
        esac
    done
    echo "$2"
}

scenario=$(param wv.scenario idle)
tag=$(param wv.tag "")
file=$(param wv.file value)
pause=$(param wv.pause 3)
interval=$(param wv.interval 5)
block=$(param wv.block "")

say "WV-BOOT kernel=$(uname -r) init=@INIT_VERSION@"

kver=$(uname -r)
failed=""
for mod in $(cat /lib/modules/$kver/load-order); do
    out=$(insmod "/lib/modules/$kver/$mod.ko" 2>&1) ||
        failed="$failed $mod:[$(echo "$out" | oneline)]"
done
if [ -n "$failed" ]; then
    say "WV-MODULES-FAILED$failed"
else
    say "WV-MODULES-LOADED"
fi

mount_share() {
    if [ -z "$tag" ]; then
        say "WV-MOUNT-FAILED tag= error=[no wv.tag on the kernel command line]"
        return 1
    fi
    out=$(mount -t virtiofs "$tag" /mnt 2>&1)
    rc=$?
    if [ $rc -eq 0 ]; then
        say "WV-MOUNTED tag=$tag options=$(grep " /mnt " /proc/mounts | cut -d' ' -f4)"
    else
        say "WV-MOUNT-FAILED tag=$tag rc=$rc error=[$(echo "$out" | oneline)]"
    fi
    return $rc
}

find_cdrom() {
    dev=""
    for i in $(seq 1 50); do
        for d in /dev/sr0 /dev/sr1 /dev/cdrom; do
            [ -b "$d" ] && dev=$d && return 0
        done
        sleep 0.2
    done
    say "WV-CDROM-FAILED error=[no cdrom device appeared]"
    return 1
}

read_value() {
    if [ -r "/mnt/$file" ]; then
        say "WV-READ n=$1 file=$file value=[$(cat "/mnt/$file" | oneline)]"
    else
        say "WV-READ-FAILED n=$1 file=$file error=[$(cat "/mnt/$file" 2>&1 | oneline)]"
    fi
}

# The ACPI power button (libvirt's shutdown) reaches acpid as an input event.
mkdir -p /etc/acpi/PWRF
printf '#!/bin/sh\necho "WV-POWER-BUTTON" > /dev/console\nsync\npoweroff -f\n' \
    > /etc/acpi/PWRF/00000080
chmod 0755 /etc/acpi/PWRF/00000080
button=""
for dev in /sys/class/input/event*; do
    [ "$(cat "$dev/device/name" 2>/dev/null)" = "Power Button" ] && button=/dev/input/${dev##*/}
done
if [ -n "$button" ] && acpid -c /etc/acpi -l /tmp/acpid.log; then
    say "WV-ACPI button=$button"
else
    say "WV-ACPI-FAILED button=[$button]"
fi

# Static addresses from the config drive's network_data.json (OpenStack format).
# Objects are split one per line at "{"; keys come in a fixed order on each line.
mask_bits() {
    echo "$1" | awk 'function pop(v, n) { n = 0; while (v > 0) { n += v % 2; v = int(v / 2) }
        return n }
        { n = 0; s = tolower($0)
          if (index(s, ".")) { k = split(s, o, "."); for (i = 1; i <= k; i++) n += pop(o[i] + 0) }
          else for (i = 1; i <= length(s); i++) {
              d = index("0123456789abcdef", substr(s, i, 1)); if (d > 0) n += pop(d - 1) }
          print n }'
}
json_field() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" | head -n 1; }

setup_network() {
    nics=""
    # insmod virtio_net probes the device at once; one short second look suffices.
    for i in 1 2; do
        nics=$(ls /sys/class/net | grep -v '^lo$')
        [ -n "$nics" ] && break
        sleep 0.2
    done
    ip link set lo up
    if [ -z "$nics" ]; then
        say "WV-NET-NONE"
        return 1
    fi
    find_cdrom || return 1
    out=$(mount -t iso9660 -o ro "$dev" /cdrom 2>&1)
    if [ $? -ne 0 ]; then
        say "WV-NET-FAILED error=[config drive not mounted: $(echo "$out" | oneline)]"
        return 1
    fi
    flat=$(tr -d '\n\r\t ' < /cdrom/openstack/latest/network_data.json 2>/dev/null | tr '{' '\n')
    umount /cdrom
    mac=$(echo "$flat" | json_field ethernet_mac_address)
    if [ -z "$mac" ]; then
        say "WV-NET-FAILED error=[no link in network_data.json]"
        return 1
    fi
    nic=""
    for n in $nics; do
        [ "$(cat /sys/class/net/$n/address)" = "$mac" ] && nic=$n
    done
    if [ -z "$nic" ]; then
        say "WV-NET-FAILED error=[no interface has mac $mac; have: $(echo $nics)]"
        return 1
    fi
    ip link set "$nic" up
    shown=""
    for family in ipv4 ipv6; do
        line=$(echo "$flat" | grep "\"type\":\"$family\"" | head -n 1)
        [ -z "$line" ] && continue
        addr=$(echo "$line" | json_field ip_address)
        prefix=$(mask_bits "$(echo "$line" | json_field netmask)")
        if [ "$family" = ipv4 ]; then
            anywhere='"network":"0.0.0.0"'; flag=-4; extra=""
        else
            anywhere='"network":"::"'; flag=-6; extra=nodad
        fi
        out=$(ip $flag addr add "$addr/$prefix" dev "$nic" $extra 2>&1 ||
            ip $flag addr add "$addr/$prefix" dev "$nic" 2>&1)
        if [ $? -ne 0 ]; then
            say "WV-NET-FAILED $family=$addr/$prefix error=[$(echo "$out" | oneline)]"
            continue
        fi
        gateway=$(echo "$flat" | grep "$anywhere" | json_field gateway)
        [ -n "$gateway" ] && ip $flag route add default via "$gateway" dev "$nic" 2>/dev/null
        shown="$shown $family=$addr/$prefix"
    done
    say "WV-NET nic=$nic mac=$mac$shown"
}

serve_http() {
    mkdir -p /www/cgi-bin /www/metrics
    uuid=$(cat /sys/class/dmi/id/product_uuid 2>/dev/null)
    printf '<html><body>wattvisor tiny guest %s</body></html>\n' "$uuid" > /www/index.html
    # /metrics redirects to /metrics/, a directory without index.html: httpd runs index.cgi.
    printf '%s\n' '#!/bin/sh' \
        'printf "Content-Type: text/plain; version=0.0.4\r\n\r\n"' \
        'echo "# HELP wv_guest_up 1 while the guest serves this page."' \
        'echo "# TYPE wv_guest_up gauge"' \
        'echo "wv_guest_up 1"' > /www/cgi-bin/index.cgi
    chmod 0755 /www/cgi-bin/index.cgi
    if out=$(httpd -p 9100 -h /www 2>&1); then
        say "WV-HTTP port=9100"
    else
        say "WV-HTTP-FAILED error=[$(echo "$out" | oneline)]"
    fi
}

setup_network && serve_http

say "WV-READY scenario=$scenario"

case "$scenario" in
    share)
        if mount_share; then
            read_value 1
            sleep "$pause"
            read_value 2
            out=$(touch /mnt/wv-guest-wrote-this 2>&1); rc=$?
            say "WV-WRITE-NEW rc=$rc error=[$(echo "$out" | oneline)]"
            out=$( (echo guest-was-here > "/mnt/$file") 2>&1 ); rc=$?
            say "WV-WRITE-EXISTING rc=$rc error=[$(echo "$out" | oneline)]"
            out=$(mkdir /mnt/wv-guest-dir 2>&1); rc=$?
            say "WV-WRITE-MKDIR rc=$rc error=[$(echo "$out" | oneline)]"
            umount /mnt
        fi
        finish
        ;;
    busy)
        if [ -n "$tag" ] && mount_share; then
            ( while :; do read_value tick; sleep "$interval"; done ) &
        elif [ -z "$tag" ]; then
            ( n=0; while :; do n=$((n + 1)); say "WV-TICK n=$n"; sleep "$interval"; done ) &
        fi
        say "WV-BUSY"
        while :; do :; done
        ;;
    poweroff)
        finish
        ;;
    devices)
        if [ -n "$block" ]; then
            for i in $(seq 1 50); do
                [ -e "/sys/block/$block" ] && break
                sleep 0.2
            done
        fi
        for d in /sys/bus/pci/devices/*; do
            id="$(sed 's/^0x//' "$d/vendor"):$(sed 's/^0x//' "$d/device")"
            say "WV-PCI slot=${d##*/} id=$id class=$(sed 's/^0x//' "$d/class")"
        done
        say "WV-BLOCK [$(ls /sys/block | oneline)]"
        say "WV-NETDEVS [$(ls /sys/class/net | oneline)]"
        finish
        ;;
    idle)
        say "WV-IDLE"
        while :; do sleep 3600; done
        ;;
    disks)
        sleep 1
        list=""
        for b in /sys/block/*; do
            name=${b##*/}
            case "$name" in loop*|ram*) continue ;; esac
            list="$list|$name:$(cat "$b/size"):$(cat "$b/serial" 2>/dev/null)"
        done
        say "WV-DISKS [${list#|}]"
        eph=$(findfs LABEL=ephemeral0 2>/dev/null)
        swap=$(findfs LABEL=swap 2>/dev/null)
        say "WV-LABELS ephemeral0=[$eph] swap=[$swap]"
        if [ -n "$swap" ]; then
            out=$(swapon "$swap" 2>&1); rc=$?
            say "WV-SWAPON rc=$rc error=[$(echo "$out" | oneline)] swaps=[$(oneline < /proc/swaps)]"
        fi
        if [ -b "/dev/$file" ]; then
            say "WV-DISK-HEAD dev=$file value=[$(head -c 64 "/dev/$file" | tr -cd 'A-Za-z0-9_.-')]"
        fi
        say "WV-IDLE"
        while :; do sleep 3600; done
        ;;
    cdrom)
        find_cdrom || finish
        out=$(mount -t iso9660 -o ro "$dev" /cdrom 2>&1)
        rc=$?
        if [ $rc -ne 0 ]; then
            say "WV-CDROM-FAILED device=$dev error=[$(echo "$out" | oneline)]"
            finish
        fi
        say "WV-CDROM-MOUNTED device=$dev"
        say "WV-CDROM-LS [$(cd /cdrom && find . | sort | oneline)]"
        if [ -r "/cdrom/$file" ]; then
            say "WV-CDROM-FILE file=$file value=[$(cat "/cdrom/$file" | oneline)]"
        else
            say "WV-CDROM-FILE-FAILED file=$file"
        fi
        umount /cdrom
        finish
        ;;
    metrics)
        metrics_tag=""
        if find_cdrom && out=$(mount -t iso9660 -o ro "$dev" /cdrom 2>&1); then
            meta=/cdrom/openstack/latest/meta_data.json
            if [ -r "$meta" ]; then
                # One device object per line, then the tag of the power_metrics share.
                metrics_tag=$(tr -d '\n\r\t ' < "$meta" | tr '}' '\n' |
                    grep '"purpose":"power_metrics"' | head -n 1 |
                    sed -n 's/.*"tag":"\([A-Za-z0-9_.-]*\)".*/\1/p')
                say "WV-METADATA uuid=$(tr -d '\n\r\t ' < "$meta" |
                    sed -n 's/.*"uuid":"\([0-9a-f-]*\)".*/\1/p') tag=$metrics_tag"
            else
                say "WV-METADATA-FAILED error=[no $meta on the config drive]"
            fi
            umount /cdrom
        else
            say "WV-METADATA-FAILED error=[config drive not mounted: $(echo "$out" | oneline)]"
        fi
        if [ -z "$metrics_tag" ]; then
            say "WV-NO-METRICS-SHARE"
            while :; do sleep 3600; done
        fi
        tag=$metrics_tag
        file="intel-rapl:0/energy_uj"
        # The share goes while the server live-migrates (unplugged on its source) and
        # comes back on its new host: a failed read drops the dead mount and mounts the
        # tag again as soon as it reappears.
        mount_share
        n=0
        while :; do
            n=$((n + 1))
            if value=$(cat "/mnt/$file" 2>&1) && [ -n "$value" ]; then
                say "WV-ENERGY n=$n energy_uj=[$(echo "$value" | oneline)]"
            else
                say "WV-ENERGY-FAILED n=$n error=[$(echo "$value" | oneline)]"
                umount -l /mnt 2>/dev/null
                out=$(mount -t virtiofs "$tag" /mnt 2>&1) && say "WV-REMOUNTED tag=$tag"
            fi
            sleep "$interval"
        done
        ;;
    *)
        accepted="share busy idle cdrom metrics devices poweroff disks"
        say "WV-ERROR unknown wv.scenario=[$scenario]; accepted: $accepted"
        finish
        ;;
esac
""".replace("@INIT_VERSION@", str(INIT_VERSION))
