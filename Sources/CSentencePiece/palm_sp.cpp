// palm_sp.cpp: the C shim over SentencePiece's C++ API (include/palm_sp.h says what it guarantees).
#include "palm_sp.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <unordered_map>
#include <vector>

namespace sentencepiece {
namespace logging {
void SetMinLogLevel(int v);  // exported by libsentencepiece, not declared in its public headers
}
}  // namespace sentencepiece

struct palm_sp {
  sentencepiece::SentencePieceProcessor processor;
  std::vector<std::string> surfaces;
  std::vector<palm_sp_kind> kinds;
  int32_t byte_ids[256];
};

static void set_error(char *err, size_t errlen, const std::string &message) {
  if (err == nullptr || errlen == 0) return;
  std::string line = message;
  for (char &c : line) if (c == '\n' || c == '\r') c = ' ';
  std::snprintf(err, errlen, "%s", line.c_str());
}

// SentencePiece's reason without its location: "Internal: ./src/x.cc(660) [check] Vocabulary size
// too high ..." -> "Vocabulary size too high ..."; `fallback` when nothing is left.
static std::string reason(const sentencepiece::util::Status &status, const char *fallback) {
  std::string text = status.ToString();
  size_t bracket = text.rfind("] ");
  if (bracket != std::string::npos) text = text.substr(bracket + 2);
  while (!text.empty() && text.back() == ' ') text.pop_back();
  return text.empty() ? fallback : text;
}

// Length of the strictly valid UTF-8 character (RFC 3629: no overlong forms, no surrogates, at
// most U+10FFFF) at p, or 0 when the bytes there are not one.
static size_t utf8_length(const unsigned char *p, size_t left) {
  unsigned char c = p[0];
  if (c < 0x80) return 1;
  size_t n;
  uint32_t cp;
  if (c >= 0xC2 && c <= 0xDF) { n = 2; cp = c & 0x1F; }
  else if (c >= 0xE0 && c <= 0xEF) { n = 3; cp = c & 0x0F; }
  else if (c >= 0xF0 && c <= 0xF4) { n = 4; cp = c & 0x07; }
  else return 0;
  if (left < n) return 0;
  for (size_t i = 1; i < n; i++) {
    if ((p[i] & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (p[i] & 0x3F);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF))) return 0;
  if (cp >= 0xD800 && cp <= 0xDFFF) return 0;
  return n;
}

// Whether the character of length n at p may be given to SentencePiece: not NUL, not U+2581
// (E2 96 81, which SentencePiece would read back as a space).
static bool passes_through(const unsigned char *p, size_t n) {
  if (n == 1) return p[0] != 0;
  return !(n == 3 && p[0] == 0xE2 && p[1] == 0x96 && p[2] == 0x81);
}

extern "C" palm_sp *palm_sp_load(const void *model, size_t size, char *err, size_t errlen) {
  try {
    auto *sp = new palm_sp();
    auto status = sp->processor.LoadFromSerializedProto(
        absl::string_view(static_cast<const char *>(model), size));
    if (!status.ok()) {
      set_error(err, errlen, "not a SentencePiece model (" + reason(status, "it does not parse as one") + ")");
      delete sp;
      return nullptr;
    }
    int n = sp->processor.GetPieceSize();
    for (int b = 0; b < 256; b++) sp->byte_ids[b] = -1;
    sp->surfaces.resize(n);
    sp->kinds.resize(n);
    for (int id = 0; id < n; id++) {
      const std::string &piece = sp->processor.IdToPiece(id);
      std::string surface;
      palm_sp_kind kind = PALM_SP_NORMAL;
      if (sp->processor.IsByte(id)) {
        unsigned value = 0;
        if (piece.size() != 6 || std::sscanf(piece.c_str(), "<0x%2X>", &value) != 1 || value > 255) {
          set_error(err, errlen, "byte piece " + std::to_string(id) + " is spelled '" + piece + "', not <0xXX>");
          delete sp;
          return nullptr;
        }
        kind = PALM_SP_BYTE;
        sp->byte_ids[value] = id;
        surface.assign(1, static_cast<char>(value));
      } else if (sp->processor.IsUnknown(id)) {
        kind = PALM_SP_UNKNOWN;
        surface = "\xEF\xBF\xBD";
      } else if (sp->processor.IsControl(id)) {
        kind = PALM_SP_CONTROL;
      } else if (sp->processor.IsUnused(id)) {
        kind = PALM_SP_UNUSED;
      } else {
        kind = PALM_SP_NORMAL;  // normal or user-defined: the public API does not tell them apart
        for (size_t i = 0; i < piece.size();) {
          if (piece.compare(i, 3, "\xE2\x96\x81") == 0) { surface += ' '; i += 3; }
          else surface += piece[i++];
        }
      }
      sp->surfaces[id] = surface;
      sp->kinds[id] = kind;
    }
    for (int b = 0; b < 256; b++) {
      if (sp->byte_ids[b] < 0) {
        char hex[8];
        std::snprintf(hex, sizeof hex, "<0x%02X>", b);
        set_error(err, errlen, std::string("the model has no byte-fallback piece ") + hex +
                                   " (palm needs a model trained with byte_fallback=true, as `palm tokenizer train` does)");
        delete sp;
        return nullptr;
      }
    }
    return sp;
  } catch (const std::exception &e) {
    set_error(err, errlen, std::string("cannot load the model: ") + e.what());
    return nullptr;
  }
}

extern "C" void palm_sp_free(palm_sp *sp) { delete sp; }

extern "C" int32_t palm_sp_vocab_size(const palm_sp *sp) { return static_cast<int32_t>(sp->surfaces.size()); }

extern "C" palm_sp_kind palm_sp_piece_kind(const palm_sp *sp, int32_t id) { return sp->kinds[id]; }

extern "C" const char *palm_sp_piece(const palm_sp *sp, int32_t id, size_t *len) {
  const std::string &p = sp->processor.IdToPiece(id);
  *len = p.size();
  return p.data();
}

extern "C" const char *palm_sp_surface(const palm_sp *sp, int32_t id, size_t *len) {
  *len = sp->surfaces[id].size();
  return sp->surfaces[id].data();
}

extern "C" int palm_sp_encode(const palm_sp *sp, const void *text, size_t size, int32_t **ids, size_t *count,
                              char *err, size_t errlen) {
  try {
    const auto *p = static_cast<const unsigned char *>(text);
    std::vector<int32_t> out;
    out.reserve(size / 2 + 16);
    std::vector<int> piece_ids;
    size_t run = 0, i = 0;  // the pending run of pass-through text is [run, i)
    auto flush = [&]() -> bool {
      if (i == run) return true;
      piece_ids.clear();
      auto status = sp->processor.Encode(absl::string_view(reinterpret_cast<const char *>(p + run), i - run), &piece_ids);
      if (!status.ok()) {
        set_error(err, errlen, "SentencePiece could not encode bytes " + std::to_string(run) + "..<" +
                                   std::to_string(i) + ": " + reason(status, "no reason given"));
        return false;
      }
      out.insert(out.end(), piece_ids.begin(), piece_ids.end());
      run = i;
      return true;
    };
    while (i < size) {
      size_t n = utf8_length(p + i, size - i);
      if (n > 0 && passes_through(p + i, n)) {
        if (i + n - run > PALM_SP_MAX_RUN && !flush()) return -1;
        i += n;
        if (p[i - 1] == '\n' && !flush()) return -1;
      } else {
        if (!flush()) return -1;
        size_t k = n > 0 ? n : 1;  // NUL / U+2581: their bytes; invalid UTF-8: one byte
        for (size_t j = 0; j < k; j++) out.push_back(sp->byte_ids[p[i + j]]);
        i += k;
        run = i;
      }
    }
    if (!flush()) return -1;
    *count = out.size();
    *ids = static_cast<int32_t *>(std::malloc(std::max<size_t>(out.size(), 1) * sizeof(int32_t)));
    if (*ids == nullptr) {
      set_error(err, errlen, "cannot allocate " + std::to_string(out.size()) + " token ids");
      return -1;
    }
    if (!out.empty()) std::memcpy(*ids, out.data(), out.size() * sizeof(int32_t));
    return 0;
  } catch (const std::exception &e) {
    set_error(err, errlen, std::string("encoding failed: ") + e.what());
    return -1;
  }
}

extern "C" void palm_sp_free_ids(int32_t *ids) { std::free(ids); }
extern "C" void palm_sp_free_bytes(void *bytes) { std::free(bytes); }

namespace {
// The training text's lines, from memory (so the trainer never re-reads a file by name).
class LineIterator : public sentencepiece::SentenceIterator {
 public:
  LineIterator(const char *text, size_t size) : end_(text + size), next_(text) { Next(); }
  bool done() const override { return done_; }
  void Next() override {
    if (next_ >= end_) { done_ = true; return; }
    const char *nl = static_cast<const char *>(std::memchr(next_, '\n', end_ - next_));
    const char *stop = nl ? nl : end_;
    line_.assign(next_, stop - next_);
    next_ = nl ? nl + 1 : end_;
  }
  const std::string &value() const override { return line_; }
  sentencepiece::util::Status status() const override { return sentencepiece::util::Status(); }

 private:
  const char *end_, *next_;
  std::string line_;
  bool done_ = false;
};
}  // namespace

extern "C" int palm_sp_train(const void *text, size_t size, const char *options, int quiet, void **model,
                             size_t *model_size, char *err, size_t errlen) {
  try {
    std::unordered_map<std::string, std::string> kwargs;
    const char *s = options;
    while (*s) {
      const char *nl = std::strchr(s, '\n');
      std::string line = nl ? std::string(s, nl - s) : std::string(s);
      s = nl ? nl + 1 : s + line.size();
      if (line.empty()) continue;
      size_t eq = line.find('=');
      if (eq == std::string::npos) {
        set_error(err, errlen, "trainer option '" + line + "' is not key=value");
        return -1;
      }
      kwargs[line.substr(0, eq)] = line.substr(eq + 1);
    }
    sentencepiece::logging::SetMinLogLevel(quiet ? 2 : 0);
    LineIterator lines(static_cast<const char *>(text), size);
    std::string serialized;
    auto status = sentencepiece::SentencePieceTrainer::Train(kwargs, &lines, &serialized);
    if (!status.ok()) {
      set_error(err, errlen, reason(status, "no reason given"));
      return -1;
    }
    *model = std::malloc(std::max<size_t>(serialized.size(), 1));
    if (*model == nullptr) {
      set_error(err, errlen, "cannot allocate the model");
      return -1;
    }
    std::memcpy(*model, serialized.data(), serialized.size());
    *model_size = serialized.size();
    return 0;
  } catch (const std::exception &e) {
    set_error(err, errlen, std::string("training failed: ") + e.what());
    return -1;
  }
}
