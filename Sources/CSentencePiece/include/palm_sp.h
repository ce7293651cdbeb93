// palm_sp: a C face for SentencePiece (Debian's libsentencepiece-dev has a C++ API only).
//
// Lossless by construction: palm_sp_encode hands SentencePiece only runs of strictly valid UTF-8
// without NUL and without U+2581 (SentencePiece's whitespace marker), each run ending at a
// newline or after at most PALM_SP_MAX_RUN bytes; every other byte becomes its byte-fallback
// token <0xXX> directly. Decoding is concatenating the pieces' surfaces (palm_sp_surface), so
// decode(encode(x)) == x for any bytes x (SentencePiece's own decoder turns invalid UTF-8 into
// U+FFFD, so it is not used). No C++ exception crosses this interface.
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Longest run of text given to SentencePiece in one call (a longer line is cut at a character
/// boundary; still lossless, the tokens next to the cut may differ).
#define PALM_SP_MAX_RUN 65536

typedef struct palm_sp palm_sp;

/// The kind of a vocabulary entry.
typedef enum {
  PALM_SP_NORMAL = 0,
  PALM_SP_UNKNOWN = 1,
  PALM_SP_CONTROL = 2,
  PALM_SP_BYTE = 4,
  PALM_SP_UNUSED = 5,
} palm_sp_kind;

/// Loads a serialized SentencePiece model (the bytes of a .model file). NULL on failure, with a
/// one-line reason in err (NUL-terminated, at most errlen bytes). The model must have byte
/// fallback: all 256 pieces <0x00> ... <0xFF>.
palm_sp *palm_sp_load(const void *model, size_t size, char *err, size_t errlen);
void palm_sp_free(palm_sp *sp);

/// Number of pieces (the model's vocabulary size).
int32_t palm_sp_vocab_size(const palm_sp *sp);
/// The kind of piece `id` (0 <= id < vocab size).
palm_sp_kind palm_sp_piece_kind(const palm_sp *sp, int32_t id);
/// The piece as the model spells it (U+2581 for a space); *len receives its length.
const char *palm_sp_piece(const palm_sp *sp, int32_t id, size_t *len);
/// The bytes piece `id` stands for in text: a byte piece its byte, a normal (or user-defined)
/// piece its text with U+2581 as a space, a control or unused piece nothing, <unk> U+FFFD.
const char *palm_sp_surface(const palm_sp *sp, int32_t id, size_t *len);

/// Encodes `size` bytes of any content. On success returns 0 and a malloc'd array of *count ids
/// in *ids (free it with palm_sp_free_ids); on failure returns -1 with a reason in err.
int palm_sp_encode(const palm_sp *sp, const void *text, size_t size, int32_t **ids, size_t *count,
                   char *err, size_t errlen);
void palm_sp_free_ids(int32_t *ids);

/// Trains a model on `size` bytes of text (one training sentence per line) with the trainer
/// options `options`: "key=value" lines separated by '\n' (SentencePiece's TrainerSpec and
/// NormalizerSpec field names). `quiet` hides SentencePiece's progress log. On success returns 0
/// and the serialized model, malloc'd, in *model / *model_size (free it with palm_sp_free_bytes); on failure -1 with SentencePiece's reason in err.
int palm_sp_train(const void *text, size_t size, const char *options, int quiet, void **model,
                  size_t *model_size, char *err, size_t errlen);
void palm_sp_free_bytes(void *bytes);

#ifdef __cplusplus
}
#endif
