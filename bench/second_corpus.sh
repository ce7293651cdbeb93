#!/usr/bin/env bash
# Builds issue 14's second corpus (at least 10 MB of English text) from documentation already on a
# Debian machine, and prints what it used. Never commit the output: it is other projects' text.
#
#   bash bench/second_corpus.sh /tmp/corpus.txt            # writes the file, prints its size and SHA-256
#
# Sources, in this order, each file in sorted path order so the corpus is the same on every machine
# with the same packages: Vim's reference manual (vim-runtime, about 9.9 MB of prose and examples),
# Perl's core documentation (perl-doc, *.pod), then the plain-text and Markdown files under
# /usr/share/doc (changelogs, READMEs) until the target size is reached. Files are joined with a
# blank line. Missing sources are skipped; if the total stays under 10 MB the script says which
# package to install and exits 1.
set -euo pipefail
out=${1:?usage: second_corpus.sh OUTPUT [MIN_BYTES]}
min=${2:-10000000}
tmp=$(mktemp "$(dirname "$out")/.corpus.XXXXXX")
trap 'rm -f "$tmp"' EXIT

total=0
add_files() {  # reads paths on stdin; appends each until the target is reached
  while IFS= read -r f; do
    [ "$total" -ge "$min" ] && return 0
    [ -f "$f" ] && [ -r "$f" ] || continue
    cat "$f" >> "$tmp"; printf '\n\n' >> "$tmp"
    total=$(stat -c %s "$tmp")
  done
}
declare -a used=()
declare -A seen=()
for src in /usr/share/vim/vim*/doc /usr/share/perl/5*/pod /usr/share/doc; do
  [ -d "$src" ] || continue
  src=$(realpath "$src")  # /usr/share/perl/5.36 is a link to 5.36.0: read each directory once
  [ -n "${seen[$src]:-}" ] && continue
  seen[$src]=1
  [ "$total" -ge "$min" ] && break
  before=$total
  add_files < <(find "$src" -type f \( -name '*.txt' -o -name '*.pod' -o -name '*.md' \) -size +1k | LC_ALL=C sort)
  [ "$total" -gt "$before" ] && used+=("$src: $((total - before)) bytes")
done

if [ "$total" -lt "$min" ]; then
  echo "second_corpus.sh: found only $total bytes of text (need $min): install vim-runtime and perl-doc (apt-get install -y vim-runtime perl-doc)" >&2
  exit 1
fi
sync "$tmp" 2>/dev/null || true
mv "$tmp" "$out"
trap - EXIT
printf '%s\n' "${used[@]}"
echo "$out: $(stat -c %s "$out") bytes, sha256 $(sha256sum "$out" | cut -d' ' -f1)"
