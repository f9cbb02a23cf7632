#!/bin/sh
# A local certificate authority and server certificates signed by it, for the sandbox twins' TLS (the stand-in for
# Let's Encrypt): DIR/ca.crt (what a client trusts), DIR/<name>.crt and DIR/<name>.key per NAME (subjectAltName
# DNS:NAME). Existing files are kept, so a converged sandbox keeps its certificates (a second converge changes
# nothing). Usage: tests/tools/local_ca.sh DIR NAME...
set -eu
dir=$1
shift
mkdir -p "$dir"
chmod 0700 "$dir"
cd "$dir"
if [ ! -f ca.crt ] || [ ! -f ca.key ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj "/CN=selfhosted sandbox CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    -keyout ca.key -out ca.crt 2>/dev/null
fi
for name in "$@"; do
  [ -f "$name.crt" ] && [ -f "$name.key" ] && continue
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$name" -keyout "$name.key" \
    -out "$name.csr" 2>/dev/null
  printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' "$name" > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -extfile "$name.ext" \
    -out "$name.crt" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
done
chmod 0600 ./*.key
