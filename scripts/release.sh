#!/usr/bin/env bash
# Builds a Phantom release into dist/<version>/: for each platform an archive
# phantom_<version>_<os>_<arch>.tar.gz holding both binaries (bin/), the
# bootstrap, the systemd unit and the docs, laid out so that
# bootstrap/bootstrap.sh finds bin/vault-plugin-secrets-phantom by default;
# a SHA256SUMS of the archives; and, for each platform, the plugin binary's
# own SHA-256 as `vault plugin register -sha256=...` takes it.
#
# Run it through `make release`, which passes the one version and the linker
# flags `make build` uses too:
#
#   VERSION     the version both binaries report (required)
#   LDFLAGS     the go linker flags that set it (required)
#   PLATFORMS   os/arch pairs (linux/amd64 linux/arm64 darwin/amd64 darwin/arm64)
#   DIST        output directory (dist)
#   GO          the go command (go)
#
# The builds are reproducible: the same commit, Go version and flags give
# byte-identical binaries and archives (-trimpath, no VCS stamp, no build
# id, no cgo; archive entries sorted, owned by 0:0 and dated to the commit).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() { echo "release: $*" >&2; exit 1; }

version=${VERSION:?VERSION is not set (run make release)}
ldflags=${LDFLAGS:?LDFLAGS is not set (run make release)}
go=${GO:-go}
platforms=${PLATFORMS:-linux/amd64 linux/arm64 darwin/amd64 darwin/arm64}
dist=${DIST:-dist}
[[ "$version" =~ ^v[0-9]+\.[0-9]+\.[0-9]+ ]] || die "VERSION=$version is not a semantic version like v1.2.3"
tar --version 2>/dev/null | grep -q 'GNU tar' || die "GNU tar is needed for reproducible archives"

# Archive entries are dated to the commit (or SOURCE_DATE_EPOCH), not to
# the time of the build.
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}

out=$dist/$version
rm -rf "$out"
mkdir -p "$out"
register=()
for platform in $platforms; do
  os=${platform%/*} arch=${platform#*/}
  name=phantom_${version}_${os}_${arch}
  stage=$out/$name
  mkdir -p "$stage/bin" "$stage/deploy"
  for cmd in vault-plugin-secrets-phantom phantom-proxy; do
    CGO_ENABLED=0 GOOS=$os GOARCH=$arch "$go" build -trimpath -buildvcs=false -ldflags "$ldflags" \
      -o "$stage/bin/$cmd" "./cmd/$cmd"
  done
  cp -R bootstrap "$stage/"
  cp -R deploy/systemd "$stage/deploy/"
  cp -R docs "$stage/"
  cp README.md CHANGELOG.md SECURITY.md BENCHMARKS.md "$stage/"
  tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner --mode='u+rw,go-w,a+rX' \
    -cf - -C "$out" "$name" | gzip -n -9 >"$out/$name.tar.gz"
  sha=$(sha256sum "$stage/bin/vault-plugin-secrets-phantom" | cut -d' ' -f1)
  register+=("$os/$arch: vault plugin register -sha256=$sha -version=$version -command=vault-plugin-secrets-phantom-$version secret vault-plugin-secrets-phantom")
  rm -rf "$stage"
  echo "release: built $out/$name.tar.gz"
done
(cd "$out" && sha256sum -- *.tar.gz >SHA256SUMS)
printf '%s\n' "${register[@]}" >"$out/vault-plugin-register.txt"

echo "release: $out/SHA256SUMS:"
sed 's/^/  /' "$out/SHA256SUMS"
echo "release: register the plugin binary of each platform (copied into Vault's plugin_directory as vault-plugin-secrets-phantom-$version) with:"
sed 's/^/  /' "$out/vault-plugin-register.txt"
