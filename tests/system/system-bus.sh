# Sourced by the system tests: a private bus configured like the system bus.
#
# start_system_bus DIR POLICY [DEFAULT_RULES [MORE_POLICY]]
#   Writes DIR/bus.conf (dbus's system.conf defaults: default deny, then
#   DEFAULT_RULES inside the default policy, MORE_POLICY after it, and the
#   D-Bus policy file POLICY included), starts dbus-daemon on DIR/bus.sock,
#   sets bus_pid and exports DBUS_SYSTEM_BUS_ADDRESS.  The caller defines
#   fail() and kills $bus_pid when it ends.
start_system_bus() {
        local dir=$1 policy=$2 default_rules=${3:-} more_policy=${4:-}

        cat >"$dir/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$dir/bus.sock</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
$default_rules
  </policy>
$more_policy
  <include>$policy</include>
</busconfig>
CONF
        dbus-daemon --config-file="$dir/bus.conf" --nofork --nopidfile >"$dir/bus.log" 2>&1 &
        bus_pid=$!
        for _ in $(seq 100); do [ -S "$dir/bus.sock" ] && break; sleep 0.05; done
        [ -S "$dir/bus.sock" ] || fail "dbus-daemon did not start: $(cat "$dir/bus.log")"
        chmod 0666 "$dir/bus.sock"
        export DBUS_SYSTEM_BUS_ADDRESS=unix:path=$dir/bus.sock
}
