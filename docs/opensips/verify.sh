#!/bin/bash
#
# verify.sh PREFIX -- test docs/opensips/opensips-xcapdiff.cfg against a real OpenSIPS.
#
# For maintainers who have OpenSIPS 3.x built locally. CI does not run this script:
# OpenSIPS is not packaged in Debian. PREFIX is the OpenSIPS install prefix (with
# sbin/opensips, lib64/opensips/modules or lib/opensips/modules, and
# share/opensips/sqlite); it needs the modules the cfg loads (auth, auth_db,
# db_sqlite, presence, pua, pua_mi, presence_xcapdiff, mi_datagram, mi_fifo, httpd,
# mi_http, ...). Also needed: sipp (Debian package sip-tester), sqlite3, python3, and
# the xcapdiff CLI (default: the repository's .venv/bin/xcapdiff; or set XCAPDIFF).
#
# Everything runs on loopback (SIPp also binds 127.0.0.2 to play an untrusted
# publisher). The cfg is copied into a scratch directory with only its paths changed
# (mpath, the SQLite file, the FIFO), plus the ports if SIP_PORT / MI_PORT / HTTP_PORT
# are set (defaults: 5060, 8080, 8888, as in the cfg). Everything started here is
# stopped by its PID at exit. Exit status 0 when every case passes.
#
# Cases:
#   a  SUBSCRIBE xcap-diff without credentials            -> 401
#   a2 same with "Event: XCAP-diff;diff-processing=aggregate" -> 401
#   b  bob (authenticated) SUBSCRIBEs to alice            -> 403
#   b2 same, with To: bob (presence watches the R-URI)    -> 403
#   c  alice SUBSCRIBEs to herself -> 200 and an initial NOTIFY; then one
#      `xcapdiff publish` each over mi_datagram, mi_fifo, mi_http (body > 1 KiB)
#      and SIP PUBLISH -> one NOTIFY each, body identical to what was published
#   d  PUBLISH xcap-diff from 127.0.0.2                   -> 403
#      PUBLISH xcap-diff from 127.0.0.1 (control)         -> 200
#   e  a new subscriber gets the last publication only, in its initial NOTIFY
#   f  in-dialog SUBSCRIBE with made-up tags, no credentials -> 481
#
# pass() always succeeds, so "[ … ] && pass … || fail …" is safe here
# shellcheck disable=SC2015
set -u

PREFIX=${1:?usage: verify.sh OPENSIPS_PREFIX}
HERE=$(cd "$(dirname "$0")" && pwd)
CFG=$HERE/opensips-xcapdiff.cfg
XCAPDIFF=${XCAPDIFF:-$HERE/../../.venv/bin/xcapdiff}
SIP_PORT=${SIP_PORT:-5060}
MI_PORT=${MI_PORT:-8080}
HTTP_PORT=${HTTP_PORT:-8888}
DOMAIN=example.com

BIN=$PREFIX/sbin/opensips
MODS=$PREFIX/lib64/opensips/modules
[ -d "$MODS" ] || MODS=$PREFIX/lib/opensips/modules
SQL=$PREFIX/share/opensips/sqlite
for f in "$BIN" "$MODS/auth_db.so" "$MODS/presence_xcapdiff.so" "$SQL/presence-create.sql"; do
	[ -e "$f" ] || { echo "missing: $f" >&2; exit 2; }
done
for c in sipp sqlite3 python3 md5sum; do
	command -v "$c" >/dev/null || { echo "missing command: $c" >&2; exit 2; }
done
[ -x "$XCAPDIFF" ] || XCAPDIFF=$(command -v xcapdiff) || { echo "no xcapdiff CLI (set XCAPDIFF)" >&2; exit 2; }

WORK=$(mktemp -d /tmp/xcapdiff-opensips.XXXXXX)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
}
trap cleanup EXIT
echo "scratch directory: $WORK"
"$BIN" -V | head -1

# --- the cfg, paths (and ports) changed only ---------------------------------------
sed -e "s|^mpath=.*|mpath=\"$MODS/\"|" \
	-e "s|sqlite:///var/lib/opensips/opensips.sqlite|sqlite://$WORK/opensips.sqlite|" \
	-e "s|/run/opensips/opensips_fifo|$WORK/opensips_fifo|" \
	-e "s|127.0.0.1:5060|127.0.0.1:$SIP_PORT|g" \
	-e "s|udp:127.0.0.1:8080|udp:127.0.0.1:$MI_PORT|" \
	-e "s|\"port\", 8888|\"port\", $HTTP_PORT|" \
	"$CFG" >"$WORK/opensips.cfg"
echo "cfg changes:"; diff "$CFG" "$WORK/opensips.cfg" | grep '^>' | sed 's/^/  /'

# --- database: schema shipped with OpenSIPS, two users -----------------------------
for s in standard presence auth_db; do sqlite3 "$WORK/opensips.sqlite" <"$SQL/$s-create.sql" || exit 2; done
ha1() { printf '%s' "$1:$DOMAIN:$2" | md5sum | cut -d' ' -f1; }
sqlite3 "$WORK/opensips.sqlite" \
	"INSERT INTO subscriber (username, domain, ha1) VALUES
	 ('alice', '$DOMAIN', '$(ha1 alice alice-secret)'),
	 ('bob', '$DOMAIN', '$(ha1 bob bob-secret)');"

# --- start OpenSIPS ------------------------------------------------------------------
"$BIN" -c -f "$WORK/opensips.cfg" >"$WORK/check.log" 2>&1 || { cat "$WORK/check.log"; exit 1; }
"$BIN" -F -f "$WORK/opensips.cfg" -w "$WORK" >"$WORK/opensips.log" 2>&1 &
OPENSIPS_PID=$!
PIDS+=("$OPENSIPS_PID")
for _ in $(seq 1 50); do [ -p "$WORK/opensips_fifo" ] && break; sleep 0.1; done
sleep 0.5
kill -0 "$OPENSIPS_PID" 2>/dev/null || { echo "OpenSIPS did not start:"; tail -20 "$WORK/opensips.log"; exit 1; }
echo "OpenSIPS running, pid $OPENSIPS_PID, log $WORK/opensips.log"

FAILS=0
pass() { echo "PASS $*"; }
fail() { echo "FAIL $*"; FAILS=$((FAILS + 1)); }

# sipp_sub NAME LOCAL_PORT [sipp options...]: run subscribe-auth.xml (foreground)
sipp_sub() {
	local name=$1 port=$2
	shift 2
	sipp "127.0.0.1:$SIP_PORT" -sf "$HERE/subscribe-auth.xml" -m 1 -i 127.0.0.1 -p "$port" \
		-nostdin -timeout 40 -timeout_error \
		-trace_msg -message_file "$WORK/$name.msg" -trace_logs -log_file "$WORK/$name.log" \
		-trace_err -error_file "$WORK/$name.err" "$@" >/dev/null 2>&1
}
answered() { grep -ho "$1 answered [0-9]*" "$WORK/$2.log" 2>/dev/null | head -1 | awk '{print $3}'; }

# --- a: no credentials --------------------------------------------------------------
sipp_sub a 5070 -set presentity "alice@$DOMAIN" -set noauth 1
r=$(answered SUBSCRIBE a); [ "$r" = 401 ] && pass "a  unauthenticated SUBSCRIBE -> $r" || fail "a  unauthenticated SUBSCRIBE -> ${r:-nothing} (want 401)"

sipp_sub a2 5070 -set presentity "alice@$DOMAIN" -set noauth 1 -set event "XCAP-diff;diff-processing=aggregate"
r=$(answered SUBSCRIBE a2); [ "$r" = 401 ] && pass "a2 unauthenticated, Event: XCAP-diff;diff-processing=aggregate -> $r" || fail "a2 Event with parameter -> ${r:-nothing} (want 401)"

# --- b: bob subscribes to alice ------------------------------------------------------
sipp_sub b 5071 -au bob -ap bob-secret -set presentity "alice@$DOMAIN" -set from "bob@$DOMAIN"
r=$(grep -ho 'SUBSCRIBE answered [0-9]*' "$WORK/b.log" | awk '{print $3}' | tr '\n' ' ')
[ "$r" = "401 403 " ] && pass "b  bob -> alice: $r" || fail "b  bob -> alice: ${r:-nothing} (want 401 403)"
sipp_sub b2 5071 -au bob -ap bob-secret -set presentity "alice@$DOMAIN" -set from "bob@$DOMAIN" -set to "bob@$DOMAIN"
r=$(grep -ho 'SUBSCRIBE answered [0-9]*' "$WORK/b2.log" | awk '{print $3}' | tr '\n' ' ')
[ "$r" = "401 403 " ] && pass "b2 bob -> R-URI alice, To bob: $r" || fail "b2 bob -> R-URI alice, To bob: ${r:-nothing} (want 401 403)"

# --- c: alice subscribes to herself, four publications ----------------------------
body() { # body N PREV NEW [ENTRIES]: an xcap-diff with a patch adding ENTRIES entries
	local i entries=""
	for ((i = 1; i <= ${4:-1}; i++)); do entries+="<rl:entry uri=\"sip:friend$1-$i@$DOMAIN\"/>"; done
	printf '<?xml version="1.0" encoding="UTF-8"?>\n<d:xcap-diff xmlns:d="urn:ietf:params:xml:ns:xcap-diff" xmlns:rl="urn:ietf:params:xml:ns:resource-lists" xcap-root="http://127.0.0.1/xcap-root/"><d:document sel="resource-lists/users/sip:alice@%s/index" previous-etag="%s" new-etag="%s"><d:add sel="rl:resource-lists/rl:list">%s</d:add></d:document></d:xcap-diff>\n' \
		"$DOMAIN" "$2" "$3" "$entries"
}
body 1 e0 e1 >"$WORK/body1.xml"
body 2 e1 e2 >"$WORK/body2.xml"
body 3 e2 e3 25 >"$WORK/body3.xml" # > 1 KiB: needs httpd's receive_buf_size
body 4 e3 e4 25 >"$WORK/body4.xml" # > 1300 bytes: our SIP client sends it over TCP
printf '[XCAPDiff]\ntransport = mi\nmi_url = udp:127.0.0.1:%s\n' "$MI_PORT" >"$WORK/mi-udp.ini"
printf '[XCAPDiff]\ntransport = mi\nmi_url = fifo:%s\nmi_reply_dir = /tmp\n' "$WORK/opensips_fifo" >"$WORK/mi-fifo.ini"
printf '[XCAPDiff]\ntransport = mi\nmi_url = http://127.0.0.1:%s/mi\n' "$HTTP_PORT" >"$WORK/mi-http.ini"
printf '[XCAPDiff]\ntransport = sip\nsip_proxy = sip:127.0.0.1:%s\n' "$SIP_PORT" >"$WORK/sip.ini"

sipp_sub c 5072 -au alice -ap alice-secret -set presentity "alice@$DOMAIN" -set max_notifies 5 -set duration 30 &
SUB_PID=$!
PIDS+=("$SUB_PID")
for _ in $(seq 1 50); do grep -q '=== NOTIFY 1[. ]' "$WORK/c.log" 2>/dev/null && break; sleep 0.1; done
r=$(grep -ho 'SUBSCRIBE answered [0-9]*' "$WORK/c.log" | awk '{print $3}' | tr '\n' ' ')
[ "$r" = "401 200 " ] && pass "c  alice -> alice: $r + initial NOTIFY" || fail "c  alice -> alice: ${r:-nothing} (want 401 200)"
n=0
for t in mi-udp mi-fifo mi-http sip; do
	n=$((n + 1))
	sleep 1.1 # presence orders publications by received_time (1 s resolution)
	out=$("$XCAPDIFF" publish --config "$WORK/$t.ini" --owner "sip:alice@$DOMAIN" "$WORK/body$n.xml" 2>&1)
	echo "   xcapdiff publish ($t, $(wc -c <"$WORK/body$n.xml") bytes): $out"
done
wait "$SUB_PID"
# NOTIFY bodies from the SIPp log: c.notify1 .. c.notifyN
python3 - "$WORK/c.log" "$WORK/c.notify" <<'EOF'
import re, sys
text = open(sys.argv[1], encoding="utf-8", errors="replace").read()
# SIPp prints the counter as a double: "=== NOTIFY 2.000000 received ..."
for m in re.finditer(r"=== NOTIFY (\d+)(?:\.0+)? received [^\n]*\n(.*?)\n=== END NOTIFY \1(?:\.0+)? ===", text, re.S):
    msg = m.group(2).replace("\r\n", "\n")
    body = msg.split("\n\n", 1)[1] if "\n\n" in msg else ""
    state = re.search(r"^Subscription-State:\s*(.*)$", msg, re.M | re.I)
    open(f"{sys.argv[2]}{m.group(1)}", "w").write(body)
    print(f"   NOTIFY {m.group(1)}: Subscription-State {state.group(1).strip() if state else '?'}, body {len(body.encode())} bytes")
EOF
for n in 1 2 3 4; do
	t=$(echo "mi-udp mi-fifo mi-http sip" | cut -d' ' -f$n)
	if cmp -s "$WORK/body$n.xml" "$WORK/c.notify$((n + 1))"; then
		pass "c  NOTIFY $((n + 1)) carries body$n ($t), byte for byte"
	elif diff -q <(tr -d '\n' <"$WORK/body$n.xml") <(tr -d '\n' <"$WORK/c.notify$((n + 1))" 2>/dev/null) >/dev/null; then
		pass "c  NOTIFY $((n + 1)) carries body$n ($t) (line ends differ)"
	else
		fail "c  NOTIFY $((n + 1)) does not carry body$n ($t)"
	fi
done

# --- d: PUBLISH from an untrusted and from the trusted address -------------------
sipp "127.0.0.1:$SIP_PORT" -sf "$HERE/publish-xcapdiff.xml" -m 1 -i 127.0.0.2 -p 5074 -nostdin \
	-timeout 10 -timeout_error -set presentity "alice@$DOMAIN" \
	-trace_msg -message_file "$WORK/d.msg" -trace_logs -log_file "$WORK/d.log" >/dev/null 2>&1
r=$(answered PUBLISH d); [ "$r" = 403 ] && pass "d  PUBLISH from 127.0.0.2 -> $r" || fail "d  PUBLISH from 127.0.0.2 -> ${r:-nothing} (want 403)"
sipp "127.0.0.1:$SIP_PORT" -sf "$HERE/publish-xcapdiff.xml" -m 1 -i 127.0.0.1 -p 5074 -nostdin \
	-timeout 10 -timeout_error -set presentity "carol@$DOMAIN" \
	-trace_msg -message_file "$WORK/d2.msg" -trace_logs -log_file "$WORK/d2.log" >/dev/null 2>&1
r=$(answered PUBLISH d2); [ "$r" = 200 ] && pass "d  PUBLISH from 127.0.0.1 (control, carol) -> $r" || fail "d  PUBLISH from 127.0.0.1 -> ${r:-nothing} (want 200)"

# --- e: a new subscriber gets the last publication only ----------------------------
sipp_sub e 5073 -au alice -ap alice-secret -set presentity "alice@$DOMAIN" -set max_notifies 1 -set duration 5
python3 - "$WORK/e.log" "$WORK/e.notify" <<'EOF'
import re, sys
text = open(sys.argv[1], encoding="utf-8", errors="replace").read()
m = re.search(r"=== NOTIFY 1(?:\.0+)? received [^\n]*\n(.*?)\n=== END NOTIFY 1(?:\.0+)? ===", text, re.S)
msg = m.group(1).replace("\r\n", "\n") if m else ""
open(f"{sys.argv[2]}1", "w").write(msg.split("\n\n", 1)[1] if "\n\n" in msg else "")
EOF
if cmp -s "$WORK/body4.xml" "$WORK/e.notify1"; then
	pass "e  new subscriber's initial NOTIFY = the last publication (body4), not the full state"
else
	fail "e  new subscriber's initial NOTIFY is not body4"
fi

# --- f: an in-dialog SUBSCRIBE for no existing subscription ------------------------
r=$(python3 - "$SIP_PORT" "$DOMAIN" <<'EOF'
import socket, sys
port, domain = int(sys.argv[1]), sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
me = s.getsockname()[1]
msg = (f"SUBSCRIBE sip:presence@127.0.0.1:{port} SIP/2.0\r\n"
       f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-forged-1\r\n"
       f"From: <sip:mallory@{domain}>;tag=forged-from\r\n"
       f"To: <sip:alice@{domain}>;tag=forged-to\r\n"
       f"Call-ID: forged-call@127.0.0.1\r\nCSeq: 5 SUBSCRIBE\r\n"
       f"Contact: <sip:mallory@127.0.0.1:{me}>\r\nMax-Forwards: 70\r\n"
       "Event: xcap-diff\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n")
s.sendto(msg.encode(), ("127.0.0.1", port))
s.settimeout(3)
try:
    print(s.recv(65535).decode(errors="replace").split("\r\n", 1)[0].split(" ", 1)[1])
except OSError:
    print("no answer")
EOF
)
case $r in 481*) pass "f  in-dialog SUBSCRIBE with forged tags, no credentials -> $r" ;; *) fail "f  forged in-dialog SUBSCRIBE -> $r (want 481)" ;; esac

# --- stop -------------------------------------------------------------------------------
kill -TERM "$OPENSIPS_PID"
wait "$OPENSIPS_PID" 2>/dev/null
PIDS=()
if grep -q 'CRITICAL' "$WORK/opensips.log"; then fail "OpenSIPS logged CRITICAL:"; grep CRITICAL "$WORK/opensips.log" | head -5; fi
echo "$FAILS failure(s); logs in $WORK"
[ "$FAILS" = 0 ]
