#!/usr/bin/env bash
# Install, upgrade or remove edge-agent as a systemd service. Run as root.
#
#   sudo deploy/install.sh                 install or upgrade, then (re)start
#   sudo deploy/install.sh --no-start      install or upgrade, enable, do not start
#   sudo deploy/install.sh --uninstall     remove program, unit, udev rules; keep config/state
#   sudo deploy/install.sh --purge         also remove /etc/edge-agent, /var/lib/edge-agent
#                                          and the edge-agent user
#
# Idempotent: running it again upgrades the package in place and never touches an
# existing /etc/edge-agent/config.toml. See --help for the options.
set -euo pipefail

readonly UNIT_NAME=edge-agent.service
readonly RULES_NAME=99-edge-agent-coral.rules
readonly SERVICE_USER=edge-agent
readonly DEVICE_GROUPS=(video plugdev apex)
readonly EXTRAS=(tflite)

ASSETS=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=${EDGE_AGENT_ROOT:-}
SOURCE=$ASSETS
PYTHON=${EDGE_AGENT_PYTHON:-/usr/bin/python3}
ACTION=install
START=1
FETCH_MODELS=0
STAGE=
trap '[ -z "$STAGE" ] || rm -rf "$STAGE"' EXIT

say() { printf '==> %s\n' "$*"; }
csv() (
	IFS=,
	echo "$*"
)
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
	printf 'error: %s\n' "$*" >&2
	exit 1
}

usage() {
	cat <<EOF
Usage: $0 [options]

  --uninstall       stop and disable the service, remove the program, unit and udev
                    rules; keep /etc/edge-agent, /var/lib/edge-agent and the user
  --purge           --uninstall, and remove config, state and the edge-agent user
  --no-start        install and enable, but do not (re)start the service
  --fetch-models    download the pinned Coral model zoo to /var/lib/edge-agent/models
  --source PATH     what pip installs: a source tree, wheel or sdist (default: $ASSETS)
  --python PATH     interpreter for the virtualenv (default: \$EDGE_AGENT_PYTHON or $PYTHON);
                    must not live under /root or /home (the unit has ProtectHome=yes)
  --root DIR        install below DIR instead of / (default: \$EDGE_AGENT_ROOT); for tests
                    and image staging: users go to DIR/etc/passwd, the service is enabled
                    offline, nothing is started or reloaded
  -h, --help        this text

Environment: EDGE_AGENT_PIP_ARGS, extra words for every pip install (e.g. a
--index-url of a local mirror, or "--no-deps --no-build-isolation --no-index" in tests).
EOF
}

while [ $# -gt 0 ]; do
	case $1 in
	--uninstall) ACTION=uninstall ;;
	--purge) ACTION=purge ;;
	--no-start) START=0 ;;
	--fetch-models) FETCH_MODELS=1 ;;
	--source) SOURCE=${2:?--source needs a path} && shift ;;
	--python) PYTHON=${2:?--python needs a path} && shift ;;
	--root) ROOT=${2:?--root needs a directory} && shift ;;
	-h | --help) usage && exit 0 ;;
	*) usage >&2 && die "unknown option: $1" ;;
	esac
	shift
done

[ "$(id -u)" -eq 0 ] || die "run as root (sudo $0)"
if [ -n "$ROOT" ]; then
	[ -d "$ROOT" ] || die "--root $ROOT is not a directory"
	ROOT=$(cd "$ROOT" && pwd)
	[ "$ROOT" != / ] || ROOT=
fi

readonly VENV=$ROOT/opt/edge-agent
readonly UNIT_DIR=$ROOT/lib/systemd/system
readonly RULES_DIR=$ROOT/etc/udev/rules.d
readonly CONF_DIR=$ROOT/etc/edge-agent
readonly STATE_DIR=$ROOT/var/lib/edge-agent

# Only on the machine itself with systemd/udev running are services started and
# rules reloaded; in a --root tree or a chroot, enabling works offline.
live_systemd() { [ -z "$ROOT" ] && [ -d /run/systemd/system ]; }
live_udev() { [ -z "$ROOT" ] && command -v udevadm >/dev/null && udevadm control --ping 2>/dev/null; }

# Users and groups: the real databases (via NSS) on /, DIR/etc/* files with --root.
SHADOW_OPTS=()
[ -z "$ROOT" ] || SHADOW_OPTS=(--prefix "$ROOT")
entry() { # entry DATABASE NAME -> the passwd/group line, or failure
	if [ -n "$ROOT" ]; then
		grep -m1 "^$2:" "$ROOT/etc/$1" 2>/dev/null
	else
		getent "$1" "$2"
	fi
}
id_of() { entry "$1" "$2" | cut -d: -f3; }

ensure_account() {
	local group
	for group in "$SERVICE_USER" "${DEVICE_GROUPS[@]}"; do
		if ! entry group "$group" >/dev/null; then
			say "creating system group $group"
			groupadd ${SHADOW_OPTS[@]+"${SHADOW_OPTS[@]}"} --system "$group"
		fi
	done
	local supplementary
	supplementary=$(csv "${DEVICE_GROUPS[@]}")
	if entry passwd "$SERVICE_USER" >/dev/null; then
		say "user $SERVICE_USER exists; making sure it is in $supplementary"
		usermod ${SHADOW_OPTS[@]+"${SHADOW_OPTS[@]}"} --append --groups "$supplementary" "$SERVICE_USER"
	else
		say "creating system user $SERVICE_USER (groups $supplementary)"
		useradd ${SHADOW_OPTS[@]+"${SHADOW_OPTS[@]}"} --system --gid "$SERVICE_USER" \
			--groups "$supplementary" --home-dir /var/lib/edge-agent --no-create-home \
			--shell /usr/sbin/nologin --comment "edge-agent daemon" "$SERVICE_USER"
	fi
}

check_python() {
	local real
	if ! real=$(command -v "$PYTHON") || ! real=$(readlink -f "$real") || [ ! -x "$real" ]; then
		die "no python interpreter at $PYTHON (install python3, or pass --python)"
	fi
	case $real in
	/root/* | /home/*) die "$PYTHON is $real: the unit's ProtectHome=yes hides it from the service; use a system python such as /usr/bin/python3" ;;
	esac
	"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null ||
		die "$PYTHON cannot create virtualenvs (Debian: apt-get install python3-venv)"
	[ -e "$SOURCE" ] || die "--source $SOURCE: no such file or directory"
}

ensure_venv() {
	local want have
	want=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
	if have=$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) &&
		[ "$have" = "$want" ]; then
		say "reusing virtualenv $VENV (python $have)"
	else
		# A venv of another python version (after an OS upgrade) cannot be reused.
		say "creating virtualenv $VENV (python $want from $PYTHON)"
		"$PYTHON" -m venv --clear "$VENV"
	fi
}

pip_install() {
	local -a extra_args=()
	read -r -a extra_args <<<"${EDGE_AGENT_PIP_ARGS:-}"
	"$VENV/bin/python" -m pip install --disable-pip-version-check --no-input \
		${extra_args[@]+"${extra_args[@]}"} "$@"
}

install_package() {
	local package=$SOURCE extra
	if [ -d "$SOURCE" ]; then
		# Build from a copy: pip builds in place and would leave build/ and
		# *.egg-info in the source tree (or fail on a read-only one).
		STAGE=$(mktemp -d)
		tar -C "$SOURCE" --exclude=./.git --exclude=./.venv --exclude=./tests \
			--exclude=./build --exclude=./dist --exclude='*.egg-info' --exclude=__pycache__ \
			-cf - . | tar -C "$STAGE" -xf -
		package=$STAGE
	fi
	local all
	all=$(csv "${EXTRAS[@]}")
	say "installing edge-agent[$all] from $SOURCE into $VENV"
	if ! pip_install "${package}[$all]"; then
		warn "installing with the extras failed; installing edge-agent alone, then each extra"
		pip_install "$package" || die "pip could not install edge-agent (see its output above)"
		for extra in "${EXTRAS[@]}"; do
			pip_install "${package}[$extra]" || warn "optional extra [$extra] not installed"
		done
	fi
	# The model fetcher is stdlib-only; it ships beside its pins.
	install -d -m 0755 "$VENV/share/edge-agent/models"
	install -m 0755 "$ASSETS/models/fetch" "$VENV/share/edge-agent/models/fetch"
	install -m 0644 "$ASSETS/models/zoo.sha256" "$VENV/share/edge-agent/models/zoo.sha256"
	ln -sfn ../share/edge-agent/models/fetch "$VENV/bin/edge-agent-fetch-models"
}

install_files() {
	local uid gid example=$ASSETS/deploy/config.example.toml
	uid=$(id_of passwd "$SERVICE_USER")
	gid=$(id_of group "$SERVICE_USER")
	say "installing $UNIT_DIR/$UNIT_NAME and $RULES_DIR/$RULES_NAME"
	install -D -m 0644 "$ASSETS/systemd/$UNIT_NAME" "$UNIT_DIR/$UNIT_NAME"
	install -D -m 0644 "$ASSETS/deploy/udev/$RULES_NAME" "$RULES_DIR/$RULES_NAME"
	# The config may hold broker credentials: readable by the daemon's user only (0600,
	# which the daemon checks); the unit mounts /etc read-only, so it cannot change it.
	install -d -m 0750 -o 0 -g "$gid" "$CONF_DIR"
	install -m 0640 -o 0 -g "$gid" "$example" "$CONF_DIR/config.example.toml"
	if [ -e "$CONF_DIR/config.toml" ]; then
		say "keeping existing $CONF_DIR/config.toml"
		if [ -n "$(find "$CONF_DIR/config.toml" -perm /o=r)" ]; then
			warn "$CONF_DIR/config.toml is world-readable; consider: chmod 0600 $CONF_DIR/config.toml"
		fi
	else
		say "installing the example configuration as $CONF_DIR/config.toml: edit it"
		install -m 0600 -o "$uid" -g "$gid" "$example" "$CONF_DIR/config.toml"
	fi
	install -d -m 0750 -o "$uid" -g "$gid" "$STATE_DIR"
}

reload_udev() {
	if live_udev; then
		say "reloading udev rules and re-applying them to plugged-in Coral devices"
		udevadm control --reload-rules
		udevadm trigger --action=change --subsystem-match=usb --attr-match=idVendor=1a6e
		udevadm trigger --action=change --subsystem-match=usb --attr-match=idVendor=18d1 \
			--attr-match=idProduct=9302
		udevadm trigger --action=change --subsystem-match=apex
	else
		say "udev is not running here: the rules apply from the next boot"
	fi
}

systemctl_offline() { systemctl --root="${ROOT:-/}" "$@"; }

enable_service() {
	if live_systemd; then
		systemctl daemon-reload
		systemctl enable "$UNIT_NAME"
		if [ "$START" -eq 1 ]; then
			say "restarting $UNIT_NAME"
			systemctl restart "$UNIT_NAME" ||
				warn "$UNIT_NAME did not start: journalctl -u $UNIT_NAME -n 50"
		fi
	elif command -v systemctl >/dev/null; then
		say "systemd is not running here: enabling $UNIT_NAME offline, it starts at boot"
		systemctl_offline enable "$UNIT_NAME"
	else
		warn "no systemctl: enable $UNIT_NAME yourself"
	fi
}

check_runtime_deps() {
	if [ -n "$ROOT" ]; then
		compgen -G "$ROOT/usr/lib/*/libedgetpu.so.1" >/dev/null
	else
		ldconfig -p 2>/dev/null | grep -q 'libedgetpu\.so\.1'
	fi || warn "libedgetpu.so.1 not found: models run on the CPU until the Debian package libedgetpu1-std is installed (Coral's apt repository or the community build: deploy/LIBEDGETPU.md)"
	# ExecReload= of the unit; minimal images (debootstrap minbase, containers) lack it.
	[ -x "$ROOT/bin/kill" ] ||
		warn "/bin/kill missing: 'systemctl reload edge-agent' fails until it exists (Debian: apt-get install procps)"
}

do_install() {
	check_python # before changing anything
	ensure_account
	ensure_venv
	install_package
	install_files
	reload_udev
	enable_service
	check_runtime_deps
	if [ "$FETCH_MODELS" -eq 1 ]; then
		say "fetching the Coral model zoo into $STATE_DIR/models"
		"$VENV/bin/edge-agent-fetch-models" --dir "$STATE_DIR/models"
	fi
	say "done. Next: edit $CONF_DIR/config.toml, then: systemctl restart $UNIT_NAME; journalctl -u $UNIT_NAME -f"
}

do_uninstall() {
	if live_systemd; then
		say "stopping and disabling $UNIT_NAME"
		systemctl disable --now "$UNIT_NAME" 2>/dev/null || true
	elif command -v systemctl >/dev/null && [ -e "$UNIT_DIR/$UNIT_NAME" ]; then
		systemctl_offline disable "$UNIT_NAME" || true
	fi
	say "removing $UNIT_DIR/$UNIT_NAME, $RULES_DIR/$RULES_NAME and $VENV"
	rm -f "$UNIT_DIR/$UNIT_NAME" "$RULES_DIR/$RULES_NAME"
	rm -rf "${VENV:?}"
	if live_systemd; then
		systemctl daemon-reload
		systemctl reset-failed "$UNIT_NAME" 2>/dev/null || true
	fi
	reload_udev
	if [ "$ACTION" = purge ]; then
		say "purging $CONF_DIR, $STATE_DIR and user $SERVICE_USER"
		rm -rf "${CONF_DIR:?}" "${STATE_DIR:?}"
		if entry passwd "$SERVICE_USER" >/dev/null; then
			userdel ${SHADOW_OPTS[@]+"${SHADOW_OPTS[@]}"} "$SERVICE_USER"
		fi
		if entry group "$SERVICE_USER" >/dev/null; then
			groupdel ${SHADOW_OPTS[@]+"${SHADOW_OPTS[@]}"} "$SERVICE_USER"
		fi
	else
		say "kept $CONF_DIR, $STATE_DIR and user $SERVICE_USER (--purge removes them)"
	fi
}

case $ACTION in
install) do_install ;;
uninstall | purge) do_uninstall ;;
esac
