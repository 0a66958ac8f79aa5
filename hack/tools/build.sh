#!/usr/bin/env bash
# Builds the pinned Kubernetes components and etcd that the test cluster runs,
# and the real servers the secret stores' tests run against (kumo for AWS
# Secrets Manager and STS, Vault), into BIN_DIR (default: bin/), and installs the node packages (containerd,
# runc, CNI plugins, iptables, conntrack) with apt where they are missing.
# A binary that exists and was built from the pinned version is skipped, so
# this runs once per machine; the Go build cache makes a rebuild cheap.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
BIN_DIR=${BIN_DIR:-$root/bin}
mkdir -p "$BIN_DIR"

# The versions come from the go.mod files, so bumping one there rebuilds.
modversion() { (cd "$1" && go list -m -f '{{.Version}}' "$2"); }
k8s_version=$(modversion "$here" k8s.io/kubernetes)
etcd_version=$(modversion "$here/etcd" go.etcd.io/etcd/server/v3)
kumo_version=$(modversion "$here/kumo" github.com/sivchari/kumo)
vault_version=$(modversion "$here/vault" github.com/hashicorp/vault)

components=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl etcd kumo vault)
start=$(date +%s)

log() { printf '%s tools: %s\n' "$(date +%H:%M:%S)" "$*"; }

install_packages() {
	local missing=()
	command -v containerd >/dev/null || missing+=(containerd)
	command -v runc >/dev/null || missing+=(runc)
	[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
	command -v iptables >/dev/null || missing+=(iptables)
	command -v conntrack >/dev/null || missing+=(conntrack)
	command -v ip >/dev/null || missing+=(iproute2)
	command -v patch >/dev/null || missing+=(patch)
	# Vault's database engine's test runs a real PostgreSQL (pkg/agent).
	compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || missing+=(postgresql)
	command -v psql >/dev/null || missing+=(postgresql-client)
	if [ ${#missing[@]} -eq 0 ]; then
		log "node packages present"
		return
	fi
	local sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	log "installing with apt: ${missing[*]}"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	# Debian starts containerd and PostgreSQL as services; the harness and
	# the tests run their own, so the system ones are not needed.
	if command -v systemctl >/dev/null; then
		for svc in containerd postgresql; do
			if systemctl is-active --quiet $svc 2>/dev/null; then
				$sudo systemctl stop $svc || true
			fi
		done
	fi
}

build() {
	local name=$1 i=$2 version pkg dir ldflags
	case $name in
	etcd)
		version=$etcd_version dir=$here/etcd pkg=go.etcd.io/etcd/server/v3 ldflags="-s -w"
		;;
	kumo)
		version=$kumo_version dir=$here/kumo pkg=github.com/sivchari/kumo/cmd/kumo ldflags="-s -w"
		;;
	vault)
		version=$vault_version dir=$here/vault pkg=github.com/hashicorp/vault ldflags="-s -w"
		;;
	*)
		version=$k8s_version dir=$here pkg=k8s.io/kubernetes/cmd/$name
		ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitTreeState=clean"
		;;
	esac
	local stamp="$BIN_DIR/.$name.version"
	if [ -x "$BIN_DIR/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
		log "[$i/${#components[@]}] $name $version: present, skipped"
		return
	fi
	log "[$i/${#components[@]}] $name $version: building"
	local t0=$(date +%s)
	[ "$name" != vault ] || vault_sdk
	(cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$BIN_DIR/$name.tmp" "$pkg")
	mv "$BIN_DIR/$name.tmp" "$BIN_DIR/$name"
	echo "$version" >"$stamp"
	log "[$i/${#components[@]}] $name $version: built in $(($(date +%s) - t0))s"
}

# vault_sdk makes the copy of Vault's sdk that hack/tools/vault/go.mod
# replaces it with: the published v0.21.0 with sdk-v0.21.0.patch applied,
# the two signatures in which it differs from Vault's unpublished in-tree sdk.
vault_sdk() {
	local sdk=$here/vault/sdk want
	want=$(sha256sum "$here/vault/sdk-v0.21.0.patch" | cut -d' ' -f1)
	if [ "$(cat "$sdk/.secctx-patched" 2>/dev/null)" = "$want" ]; then
		return
	fi
	local src
	src=$(cd / && GOFLAGS= go mod download -json github.com/hashicorp/vault/sdk@v0.21.0 | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
	[ -d "$src" ] || { echo "tools: cannot download github.com/hashicorp/vault/sdk@v0.21.0" >&2; exit 1; }
	rm -rf "$sdk"
	cp -r "$src" "$sdk"
	chmod -R u+w "$sdk"
	(cd "$sdk" && patch -s -p1 <"$here/vault/sdk-v0.21.0.patch")
	echo "$want" >"$sdk/.secctx-patched"
}

if [ "${SKIP_PACKAGES:-}" != 1 ]; then
	install_packages
fi
i=0
for c in "${components[@]}"; do
	i=$((i + 1))
	build "$c" "$i"
done
log "all tools in $BIN_DIR ($(($(date +%s) - start))s)"
