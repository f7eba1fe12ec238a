"""Tiny but real models, built at test time, for the three local engines Plush runs.

No real Whisper weights or Piper voice can ship with the repository (a user's fresh clone has none), so the
suite builds its own: a random-weight CTranslate2 Whisper that faster-whisper loads offline, a Piper voice
whose ONNX graph returns a quiet tone, and a llama GGUF chat model that llama.cpp streams gibberish from.
Each is built in well under a second, is deterministic (fixed seeds) and goes through the real library's own
loading and inference code, so tests exercise the production code paths with nothing faked.
"""

from __future__ import annotations

import itertools
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from tokenizers import Tokenizer

_SEED = 1234

# ---------------------------------------------------------------------------------------------------- Whisper

# Whisper's 99 language tokens in Whisper's own order (openai/whisper's LANGUAGES). With 50,257 byte-level text
# tokens (the last one empty, as in the real vocabulary), <|endoftext|>, <|startoftranscript|>, these, 6 task
# tokens and 1,501 timestamps the vocabulary has exactly 51,865 entries: CTranslate2 decides "multilingual" from
# the size (== or >= 51865, depending on the version) or from the empty token (4.8); an English-only model
# would make faster-whisper silently turn language="ko" into "en".
_LANGUAGE_CODES = (
    "en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no th ur hr bg "
    "lt la mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw gl mr pa si km sn yo so af "
    "oc ka be tg sd gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl mg as tt haw ln ha ba jw su"
)
WHISPER_LANGUAGES = tuple(_LANGUAGE_CODES.split())
_WHISPER_TASK_TOKENS = ("translate", "transcribe", "startoflm", "startofprev", "nocaptions", "notimestamps")
_WHISPER_TEXT_TOKENS = 50257
_WHISPER_VOCAB = 51865
_WHISPER_DIMS = {"d_model": 64, "heads": 2, "layers": 2, "ffn": 128, "n_mels": 80}
# Added to the logits of every special and timestamp token (see build_whisper).
_SPECIAL_LOGIT_BIAS = -30.0
# Words the generated tokenizer has merges for, so that encoding real text yields multi-byte tokens too.
_MERGED_WORDS = ("Ġthe", "Ġand", "Ġyou", "Ġhello", "Ġplush", "Ġhi", "ing", "Ġwhat", "Ġis")


def _byte_to_unicode() -> list[str]:
    """GPT-2's byte-to-character table in vocabulary order (printable bytes first): Whisper's ids 0-255."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(others))]


def _pseudo_words() -> itertools.chain[str]:
    """Endless readable filler tokens (" ba", " babe", ...) so random weights print word-like text."""
    syllables = [c + v for c in "bdfghjklmnprstvwz" for v in "aeiou"]
    return itertools.chain.from_iterable(
        ("Ġ" + "".join(parts) for parts in itertools.product(syllables, repeat=n)) for n in itertools.count(1)
    )


def _whisper_tokens() -> tuple[list[str], list[tuple[str, str]]]:
    """The 51,865 vocabulary entries of the generated tokenizer, in id order, and its BPE merges."""
    tokens = _byte_to_unicode()
    merges: list[tuple[str, str]] = []
    for word in _MERGED_WORDS:
        for end in range(2, len(word) + 1):
            if word[:end] not in tokens:
                merges.append((word[: end - 1], word[end - 1]))
                tokens.append(word[:end])
    known = set(tokens)
    fillers = (w for w in _pseudo_words() if w not in known)
    tokens += itertools.islice(fillers, _WHISPER_TEXT_TOKENS - 1 - len(tokens))
    tokens.append("")  # id 50256 is empty in the real multilingual vocabulary; CTranslate2 4.8 looks for it
    tokens += ["<|endoftext|>", "<|startoftranscript|>", *(f"<|{c}|>" for c in WHISPER_LANGUAGES)]
    tokens += [f"<|{t}|>" for t in _WHISPER_TASK_TOKENS]
    tokens += [f"<|{i * 0.02:.2f}|>" for i in range(_WHISPER_VOCAB - len(tokens))]
    return tokens, merges


def _write_whisper_tokenizer(dest: Path) -> tuple[list[str], Tokenizer]:
    """Write a byte-level tokenizer.json in Whisper's layout; return the vocabulary (id order) and tokenizer."""
    import tokenizers
    from tokenizers import AddedToken, decoders, models, pre_tokenizers

    tokens, merges = _whisper_tokens()
    vocab = {tok: i for i, tok in enumerate(tokens[: _WHISPER_TEXT_TOKENS + 1])}
    tokenizer = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = [AddedToken(t, special=True, normalized=False) for t in tokens[_WHISPER_TEXT_TOKENS:]]
    tokenizer.add_special_tokens(specials)
    tokenizer.save(str(dest / "tokenizer.json"))
    return tokens, tokenizer


def _whisper_config(tokens: list[str], hf_tokenizer: Tokenizer) -> dict[str, Any]:
    """The config fields CTranslate2 reads, derived from the tokenizer as the real config's are."""
    from faster_whisper.tokenizer import Tokenizer as WhisperTokenizer

    tok = WhisperTokenizer(hf_tokenizer, multilingual=True, task="transcribe", language="en")
    extra = [tok.sot, tok.translate, tok.transcribe, tok.sot_lm, tok.sot_prev, tok.no_speech]
    return {
        "suppress_ids": sorted({*tok.non_speech_tokens, *extra}),
        "suppress_ids_begin": [tokens.index("Ġ"), tok.eot],
        "lang_ids": [tokens.index(f"<|{c}|>") for c in WHISPER_LANGUAGES],
    }


def _whisper_spec(tokens: list[str], config: dict[str, Any], dims: dict[str, int]) -> Any:
    """A ``WhisperSpec`` filled with seeded random weights in the layout of CTranslate2's ``WhisperLoader``."""
    from ctranslate2.specs import whisper_spec

    d, heads, layers, ffn, n_mels = (dims[k] for k in ("d_model", "heads", "layers", "ffn", "n_mels"))
    rng = np.random.default_rng(_SEED)

    def rand(*shape: int) -> NDArray[np.float32]:
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    def linear(spec: Any, out_dim: int, in_dim: int) -> None:
        spec.weight, spec.bias = rand(out_dim, in_dim), rand(out_dim)

    def norm(spec: Any) -> None:
        spec.gamma, spec.beta = np.ones(d, np.float32), np.zeros(d, np.float32)

    def attention(spec: Any, *, cross: bool) -> None:
        norm(spec.layer_norm)
        if cross:  # query from the decoder; keys and values (fused) from the encoder output
            linear(spec.linear[0], d, d)
            linear(spec.linear[1], 2 * d, d)
        else:  # fused query, key and value
            linear(spec.linear[0], 3 * d, d)
        linear(spec.linear[-1], d, d)

    def block(spec: Any) -> None:
        attention(spec.self_attention, cross=False)
        if hasattr(spec, "attention"):  # decoder layers only
            attention(spec.attention, cross=True)
        norm(spec.ffn.layer_norm)
        linear(spec.ffn.linear_0, ffn, d)
        linear(spec.ffn.linear_1, d, ffn)

    spec = whisper_spec.WhisperSpec(layers, heads, layers, heads)
    enc, dec = spec.encoder, spec.decoder
    enc.conv1.weight, enc.conv1.bias = rand(d, n_mels, 3), rand(d)
    enc.conv2.weight, enc.conv2.bias = rand(d, d, 3), rand(d)
    enc.position_encodings.encodings = rand(1500, d)
    norm(enc.layer_norm)
    for layer in [*enc.layer, *dec.layer]:
        block(layer)
    dec.embeddings.weight = rand(len(tokens), d)
    dec.position_encodings.encodings = rand(448, d)
    norm(dec.layer_norm)
    dec.projection.weight = dec.embeddings.weight  # tied, as in Whisper (saved once, as an alias)
    special = np.arange(len(tokens)) >= tokens.index("<|endoftext|>")
    dec.projection.bias = np.where(special, _SPECIAL_LOGIT_BIAS, 0.0).astype(np.float32)

    for key, value in config.items():
        setattr(spec.config, key, value)
    # The real tiny's alignment heads (layers 2-3) do not exist here; this is the converter's default.
    spec.config.alignment_heads = [[layer, h] for layer in range(layers // 2, layers) for h in range(heads)]
    spec.register_vocabulary(tokens)
    spec.validate()
    return spec


def build_whisper(dest: Path, tokenizer_dir: Path | None = None, dims: dict[str, int] | None = None) -> Path:
    """Write a random-weight CTranslate2 Whisper model directory that faster-whisper loads offline.

    The weights fill ``ctranslate2.specs.WhisperSpec`` in the layout of CTranslate2's own transformers
    converter (``WhisperLoader``: fused self-attention QKV, cross-attention Q and fused KV, conv1/conv2 front
    end) at tiny size (d_model 64, 2 heads, 2+2 layers, 80 mel bins, int8) from a fixed seed, so every build
    is byte-identical. ``tokenizer_dir`` (the real ``tokenizer.json``, ``vocabulary.txt`` and ``config.json``
    of a 51,865-token Whisper) supplies the vocabulary; without it a Whisper-layout byte-level tokenizer is
    generated. The output projection has a bias of -30 on every special and timestamp token (what training
    teaches a real model: text dominates), so the model always prints text and never end-of-text (callers
    pass ``max_new_tokens``), and its no-speech probability is ~1e-18, so faster-whisper's no-speech skip
    never fires with the default thresholds. ``dims`` overrides the sizes (benchmarks build Whisper base:
    d_model 512, 8 heads, 6+6 layers, ffn 2048; compute cost is the real model's, whatever the weights).
    """
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("model.bin", "config.json", "vocabulary.json", "vocabulary.txt", "tokenizer.json"):
        (dest / name).unlink(missing_ok=True)  # a rebuild into the same folder leaves no stale file behind
    if tokenizer_dir is None:
        tokens, hf_tokenizer = _write_whisper_tokenizer(dest)
        config = _whisper_config(tokens, hf_tokenizer)
    else:
        text = (tokenizer_dir / "vocabulary.txt").read_text(encoding="utf-8")
        tokens = text.removesuffix("\n").split("\n")
        shutil.copyfile(tokenizer_dir / "tokenizer.json", dest / "tokenizer.json")
        real = json.loads((tokenizer_dir / "config.json").read_text(encoding="utf-8"))
        config = {k: real[k] for k in ("suppress_ids", "suppress_ids_begin", "lang_ids")}
    spec = _whisper_spec(tokens, config, {**_WHISPER_DIMS, **(dims or {})})
    spec.optimize("int8")
    spec.save(str(dest))
    return dest


# ------------------------------------------------------------------------------------------------------ Piper

PIPER_SAMPLES_PER_ID = 256  # the hop length of real Piper voices: one phoneme id -> 256 samples
PIPER_AMPLITUDE = 0.1  # raw model output; PiperVoice.synthesize normalizes to 1.0 unless told not to
_PIPER_TONE_HZ = 220.0


def build_piper_voice(
    dest_dir: Path, *, espeak_voice: str = "en-us", sample_rate: int = 22050, name: str = "tiny"
) -> Path:
    """Write ``<name>.onnx`` and ``<name>.onnx.json``, a voice ``PiperVoice.load`` accepts; return the .onnx.

    The graph has a real voice's interface (``input`` int64 [1,N], ``input_lengths`` int64 [1], ``scales``
    float32 [3] -> audio float32 [1,1,T]) and returns a quiet 220 Hz tone of exactly T = N*256 samples, so
    audio length follows the phoneme count, deterministically. Phonemization is real (espeak-ng data ships
    inside the piper-tts wheel), so any ``espeak_voice`` espeak-ng knows ("en-us", "ko", ...) works offline.
    """
    import onnx
    from onnx import TensorProto, helper

    def const(out: str, value: float | list[int], dtype: int) -> onnx.NodeProto:
        dims = [len(value)] if isinstance(value, list) else []
        vals: list[float] = list(value) if isinstance(value, list) else [value]
        return helper.make_node("Constant", [], [out], value=helper.make_tensor(out, dtype, dims, vals))

    nodes = [
        const("zero", 0, TensorProto.INT64),
        const("one", 1, TensorProto.INT64),
        const("hop", PIPER_SAMPLES_PER_ID, TensorProto.INT64),
        const("step", 2.0 * np.pi * _PIPER_TONE_HZ / sample_rate, TensorProto.FLOAT),
        const("amp", PIPER_AMPLITUDE, TensorProto.FLOAT),
        const("out_shape", [1, 1, -1], TensorProto.INT64),
        helper.make_node("Shape", ["input"], ["in_shape"]),
        helper.make_node("Gather", ["in_shape", "one"], ["n_ids"], axis=0),
        helper.make_node("Mul", ["n_ids", "hop"], ["n_samples"]),
        helper.make_node("Range", ["zero", "n_samples", "one"], ["index"]),
        helper.make_node("Cast", ["index"], ["index_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["index_f", "step"], ["phase"]),
        helper.make_node("Sin", ["phase"], ["wave"]),
        helper.make_node("Mul", ["wave", "amp"], ["quiet"]),
        helper.make_node("Reshape", ["quiet", "out_shape"], ["output"]),
    ]
    inputs = [
        helper.make_tensor_value_info("input", TensorProto.INT64, [1, "phonemes"]),
        helper.make_tensor_value_info("input_lengths", TensorProto.INT64, [1]),
        helper.make_tensor_value_info("scales", TensorProto.FLOAT, [3]),
    ]
    output = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, "time"])
    graph = helper.make_graph(nodes, "tiny_piper_tone", inputs, [output])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)], ir_version=8)
    onnx.checker.check_model(model)

    dest_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = dest_dir / f"{name}.onnx"
    onnx.save(model, str(onnx_path))
    write_piper_config(onnx_path, espeak_voice=espeak_voice, sample_rate=sample_rate)
    return onnx_path


def write_piper_config(onnx_path: Path, *, espeak_voice: str, sample_rate: int, length_scale: float = 1.0) -> None:
    """The ``.onnx.json`` beside a voice: what ``PiperVoice.load`` needs (espeak phonemes, the default id map)."""
    from piper.phoneme_ids import DEFAULT_PHONEME_ID_MAP

    config = {
        "audio": {"sample_rate": sample_rate},
        "espeak": {"voice": espeak_voice},
        "phoneme_type": "espeak",
        "num_symbols": 1 + max(i for ids in DEFAULT_PHONEME_ID_MAP.values() for i in ids),
        "num_speakers": 1,
        "speaker_id_map": {},
        "inference": {"noise_scale": 0.667, "length_scale": length_scale, "noise_w": 0.8},
        "phoneme_id_map": DEFAULT_PHONEME_ID_MAP,
        "piper_version": "1.8.0",
    }
    config_text = json.dumps(config, ensure_ascii=False, indent=1)
    onnx_path.with_name(onnx_path.name + ".json").write_text(config_text, encoding="utf-8")


# ------------------------------------------------------------------------------------------------------- GGUF

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_GGUF_DIMS = {"n_embd": 64, "n_head": 4, "n_head_kv": 2, "n_layer": 2, "n_ff": 128, "n_ctx": 2048}
_GGUF_TEXT = (
    "hello hi there how are you I am Plush a the and to of is it what do like play story friend happy "
    "sing song bear bunny toy good day night sleep dream fun yes no please thank"
)


def _gguf_vocab() -> tuple[list[str], list[float], list[int]]:
    """SentencePiece-style vocab: <unk> <s> </s>, 256 <0xNN> bytes, ChatML markers, characters, '▁' words."""
    from gguf import TokenType

    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), "<|im_start|>", "<|im_end|>"]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL, *[TokenType.BYTE] * 256]
    types += [TokenType.CONTROL] * 2
    pieces = ["▁", *"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'-"]
    for word in _GGUF_TEXT.split():  # every prefix too: SentencePiece only merges symbol pairs into known pieces
        pieces += ["▁" + word[:end] for end in range(1, len(word) + 1)]
    pieces = list(dict.fromkeys(pieces))
    tokens += pieces
    types += [TokenType.NORMAL] * len(pieces)
    scores = [0.0] * (len(tokens) - len(pieces)) + [len(p) - i * 1e-4 for i, p in enumerate(pieces)]
    return tokens, scores, [int(t) for t in types]


def build_gguf(dest: Path, dims: dict[str, int] | None = None, *, chat_template: str | None = CHATML_TEMPLATE) -> Path:
    """Write a tiny llama-architecture GGUF chat model (random F32 weights, fixed seed) to ``dest``.

    About 0.5 MB: 2 layers, n_embd 64, 4 heads (2 KV heads: GQA), a SentencePiece-style vocab of 439 tokens
    and a ChatML ``tokenizer.chat_template``, so llama.cpp loads it in milliseconds and
    ``create_chat_completion`` renders a real prompt and streams tokens. The output rows of control, unknown
    and non-printable byte tokens are zero while the others are random, so greedy or low-temperature decoding
    only ever picks word pieces and printable ASCII bytes: the stream is readable gibberish that never ends
    early with </s> (callers pass ``max_tokens``). ``dims`` overrides the sizes (benchmarks build models at
    real dimensions: compute cost is the real model's, whatever the weights). ``chat_template=None`` writes
    no template at all, as in a *base* model's GGUF. Returns ``dest``.
    """
    import gguf

    dims = {**_GGUF_DIMS, **(dims or {})}
    n_embd, n_ff, head_dim = dims["n_embd"], dims["n_ff"], dims["n_embd"] // dims["n_head"]
    tokens, scores, types = _gguf_vocab()
    rng = np.random.default_rng(_SEED)

    def rand(*shape: int, scale: float = 0.1) -> NDArray[np.float32]:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    printable = {f"<0x{b:02X}>" for b in range(0x20, 0x7F)}
    normal = int(gguf.TokenType.NORMAL)
    emittable = [t == normal or tok in printable for tok, t in zip(tokens, types, strict=True)]
    output = rand(len(tokens), n_embd, scale=1.0) * np.array(emittable, np.float32)[:, None]

    dest.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(dest), "llama")
    writer.add_name("plush-tiny-test")
    writer.add_context_length(dims["n_ctx"])
    writer.add_embedding_length(n_embd)
    writer.add_block_count(dims["n_layer"])
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(dims["n_head"])
    writer.add_head_count_kv(dims["n_head_kv"])
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    if chat_template is not None:
        writer.add_chat_template(chat_template)

    # numpy shapes are ggml's reversed: (rows = output features, columns = input features)
    writer.add_tensor("token_embd.weight", rand(len(tokens), n_embd, scale=1.0))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))
    writer.add_tensor("output.weight", output)
    kv_dim = dims["n_head_kv"] * head_dim
    shapes = {
        "attn_q": (n_embd, n_embd),
        "attn_k": (kv_dim, n_embd),
        "attn_v": (kv_dim, n_embd),
        "attn_output": (n_embd, n_embd),
        "ffn_gate": (n_ff, n_embd),
        "ffn_up": (n_ff, n_embd),
        "ffn_down": (n_embd, n_ff),
    }
    for i in range(dims["n_layer"]):
        for name, shape in shapes.items():
            writer.add_tensor(f"blk.{i}.{name}.weight", rand(*shape))
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, np.float32))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dest


# -------------------------------------------------------------------------------------------------- All three


@dataclass(frozen=True)
class TinyModels:
    """The paths of one set of tiny models, for tests that need all three engines."""

    whisper_dir: Path  # a faster-whisper model folder
    piper_voice: Path  # a Piper .onnx voice (its .onnx.json beside it)
    gguf: Path  # a llama.cpp GGUF chat model


def build_models(dest_dir: Path, tokenizer_dir: Path | None) -> TinyModels:
    """Build all three under ``dest_dir`` (whisper/, piper/tiny.onnx, tiny.gguf), in about a second."""
    return TinyModels(
        whisper_dir=build_whisper(dest_dir / "whisper", tokenizer_dir),
        piper_voice=build_piper_voice(dest_dir / "piper"),
        gguf=build_gguf(dest_dir / "tiny.gguf"),
    )
