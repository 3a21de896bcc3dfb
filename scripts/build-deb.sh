#!/usr/bin/env bash
# Builds the Debian package from the dynamic release build (scripts/build-dynamic.sh, reused
# when up to date): the binary and its drop-in names, the systemd unit, the default config, the
# PAM service, the power scripts directory, a man page and shell completions generated from the
# CLI (`toolbox __generate`). Prints the package's path last.
set -euo pipefail
# `grep -c >/dev/null`, never `grep -q`, after a pipe: -q stops reading at the first match, and
# under pipefail the writer's broken pipe then fails the check that matched.
cd "$(dirname "$0")/.."
bin=$(scripts/build-dynamic.sh | tail -n1)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
out=target/deb
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/root

install -D -m 0755 "$bin" "$root/usr/bin/toolbox"
for name in vmware-rpctool vmware-checkvm vmtoolsd; do
    ln -s toolbox "$root/usr/bin/$name"
done
install -D -m 0644 packaging/toolbox.service "$root/lib/systemd/system/toolbox.service"
install -D -m 0644 packaging/toolbox.toml "$root/etc/toolbox/toolbox.toml"
install -D -m 0644 dist/pam.d/toolbox "$root/etc/pam.d/toolbox"
install -d -m 0755 "$root/etc/vmware-tools"

gen=$stage/gen
"$bin" __generate "$gen"
install -D -m 0644 "$gen/toolbox.1" "$root/usr/share/man/man1/toolbox.1"
gzip -9n "$root/usr/share/man/man1/toolbox.1"
for name in vmware-rpctool vmware-checkvm vmtoolsd; do
    ln -s toolbox.1.gz "$root/usr/share/man/man1/$name.1.gz"
done
install -D -m 0644 "$gen/toolbox.bash" "$root/usr/share/bash-completion/completions/toolbox"
install -D -m 0644 "$gen/_toolbox" "$root/usr/share/zsh/vendor-completions/_toolbox"
install -D -m 0644 "$gen/toolbox.fish" "$root/usr/share/fish/vendor_completions.d/toolbox.fish"

doc=$root/usr/share/doc/toolbox
install -D -m 0644 packaging/debian/copyright "$doc/copyright"
# Who signs the package: set DEB_MAINTAINER for a release.
maintainer=${DEB_MAINTAINER:-toolbox maintainers <toolbox@example.org>}
# A native package (no Debian revision): its changelog is changelog.gz.
sed -e "s/@VERSION@/$version/" -e "s/@MAINTAINER@/$maintainer/" packaging/debian/changelog |
    gzip -9n >"$doc/changelog.gz"
chmod 0644 "$doc/changelog.gz"

install -d -m 0755 "$root/DEBIAN"
size=$(du -k -s --apparent-size "$root" | cut -f1)
# Depends follows what the binary links: libpam only once something reaches the PAM backend.
depends="libc6 (>= 2.34)"
if readelf -d "$bin" | grep -c 'NEEDED.*libpam' >/dev/null; then
    depends="$depends, libpam0g (>= 0.99.7.1)"
fi
if readelf -d "$bin" | grep -c 'NEEDED.*libgcc_s' >/dev/null; then
    depends="$depends, libgcc-s1 (>= 3.0)"
fi
sed -e "s/@VERSION@/$version/" -e "s/@SIZE@/$size/" -e "s/@DEPENDS@/$depends/" -e "s/@MAINTAINER@/$maintainer/" \
    packaging/debian/control >"$root/DEBIAN/control"
install -m 0644 packaging/debian/conffiles "$root/DEBIAN/conffiles"
for script in postinst prerm postrm; do
    install -m 0755 "packaging/debian/$script" "$root/DEBIAN/$script"
done
(cd "$root" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums"

mkdir -p "$out"
deb=$out/toolbox_${version}_amd64.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$PWD/$deb"
