"""A BERT sentence encoder in plain TensorFlow, built from PyTorch-layout weights.

Only the converter (embedder/convert.py) imports this module; the service loads the
SavedModel it produces through tensorflow_hub and never needs this code.

Activations are kept 2-D ([batch * tokens, hidden]) between layers so every dense layer is a
plain MatMul: on CPU a 3-D x 2-D matmul was about 3x slower for this model size.

Two signatures share the weights: `embed_tokens` computes in float32, `embed_tokens_bf16` runs the
dense layers' MatMuls in bfloat16 (inputs and weights rounded, float32 accumulation and everything
else in float32: layer norms, softmax, pooling). On a CPU with AMX or AVX512-BF16 oneDNN runs those
MatMuls about twice as fast; the vectors stay within a cosine of about 0.9999 of float32. The
weights are cast in the graph, so the serving side freezes the function to fold the casts once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

_SIGNATURE = [
    tf.TensorSpec([None, None], tf.int32, name="input_ids"),
    tf.TensorSpec([None, None], tf.int32, name="attention_mask"),
]


@dataclass(frozen=True)
class BertConfig:
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    layer_norm_eps: float
    max_positions: int

    @classmethod
    def from_hf_config(cls, config: dict) -> BertConfig:
        if config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"unsupported activation {config['hidden_act']!r}: only exact GELU")
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("only absolute position embeddings are supported")
        return cls(
            hidden_size=config["hidden_size"],
            num_layers=config["num_hidden_layers"],
            num_heads=config["num_attention_heads"],
            intermediate_size=config["intermediate_size"],
            layer_norm_eps=config["layer_norm_eps"],
            max_positions=config["max_position_embeddings"],
        )


def _dense(weights: dict[str, np.ndarray], prefix: str) -> tuple[tf.Variable, tf.Variable]:
    # PyTorch stores Linear weights as [out, in]; MatMul wants [in, out].
    kernel = tf.Variable(weights[f"{prefix}.weight"].T.copy(), trainable=False)
    bias = tf.Variable(weights[f"{prefix}.bias"], trainable=False)
    return kernel, bias


def _layer_norm_params(weights: dict[str, np.ndarray], prefix: str) -> tuple[tf.Variable, tf.Variable]:
    return (
        tf.Variable(weights[f"{prefix}.weight"], trainable=False),
        tf.Variable(weights[f"{prefix}.bias"], trainable=False),
    )


class _Layer(tf.Module):
    def __init__(self, weights: dict[str, np.ndarray], index: int, config: BertConfig):
        super().__init__(name=f"layer_{index}")
        p = f"encoder.layer.{index}"
        # Query, key and value share one MatMul: [hidden, 3 * hidden].
        qkv = [weights[f"{p}.attention.self.{n}.weight"].T for n in ("query", "key", "value")]
        self.qkv_kernel = tf.Variable(np.concatenate(qkv, axis=1), trainable=False)
        self.qkv_bias = tf.Variable(
            np.concatenate([weights[f"{p}.attention.self.{n}.bias"] for n in ("query", "key", "value")]),
            trainable=False,
        )
        self.attn_out_kernel, self.attn_out_bias = _dense(weights, f"{p}.attention.output.dense")
        self.attn_ln_gamma, self.attn_ln_beta = _layer_norm_params(weights, f"{p}.attention.output.LayerNorm")
        self.ffn_in_kernel, self.ffn_in_bias = _dense(weights, f"{p}.intermediate.dense")
        self.ffn_out_kernel, self.ffn_out_bias = _dense(weights, f"{p}.output.dense")
        self.ffn_ln_gamma, self.ffn_ln_beta = _layer_norm_params(weights, f"{p}.output.LayerNorm")
        self._config = config


class BertSentenceEncoder(tf.Module):
    """BERT encoder + mean pooling over the attention mask + L2 normalisation, of the last layer
    (`embeddings`) and of every layer (`layer_embeddings`, [batch, layers * hidden])."""

    def __init__(self, weights: dict[str, np.ndarray], config: BertConfig):
        super().__init__(name="bert_sentence_encoder")
        self.config = config
        self.word_embeddings = tf.Variable(weights["embeddings.word_embeddings.weight"], trainable=False)
        self.position_embeddings = tf.Variable(weights["embeddings.position_embeddings.weight"], trainable=False)
        # Single-segment input: token type 0 everywhere, so its embedding is one constant row.
        self.token_type_embedding = tf.Variable(weights["embeddings.token_type_embeddings.weight"][0], trainable=False)
        self.embed_ln_gamma, self.embed_ln_beta = _layer_norm_params(weights, "embeddings.LayerNorm")
        self.layers = [_Layer(weights, i, config) for i in range(config.num_layers)]

    def _layer_norm(self, x: tf.Tensor, gamma: tf.Variable, beta: tf.Variable) -> tf.Tensor:
        mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
        return (x - mean) * tf.math.rsqrt(variance + self.config.layer_norm_eps) * gamma + beta

    @staticmethod
    def _dense(x: tf.Tensor, kernel: tf.Variable, bias: tf.Variable, dtype: tf.DType) -> tf.Tensor:
        if dtype == tf.float32:
            return tf.matmul(x, kernel) + bias
        return tf.cast(tf.matmul(tf.cast(x, dtype), tf.cast(kernel, dtype)), tf.float32) + bias

    def _attention(
        self, x: tf.Tensor, layer: _Layer, batch: tf.Tensor, tokens: tf.Tensor, mask_bias: tf.Tensor, dtype: tf.DType
    ) -> tf.Tensor:
        heads = self.config.num_heads
        head_dim = self.config.hidden_size // heads
        qkv = self._dense(x, layer.qkv_kernel, layer.qkv_bias, dtype)  # [B*T, 3H]
        qkv = tf.reshape(qkv, [batch, tokens, 3, heads, head_dim])
        qkv = tf.transpose(qkv, [2, 0, 3, 1, 4])  # [3, B, heads, T, head_dim]
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = tf.matmul(q, k, transpose_b=True) * (1.0 / math.sqrt(head_dim)) + mask_bias
        context = tf.matmul(tf.nn.softmax(scores, axis=-1), v)  # [B, heads, T, head_dim]
        context = tf.reshape(tf.transpose(context, [0, 2, 1, 3]), [batch * tokens, self.config.hidden_size])
        return self._dense(context, layer.attn_out_kernel, layer.attn_out_bias, dtype)

    def _feed_forward(self, x: tf.Tensor, layer: _Layer, dtype: tf.DType) -> tf.Tensor:
        hidden = tf.nn.gelu(self._dense(x, layer.ffn_in_kernel, layer.ffn_in_bias, dtype), approximate=False)
        return self._dense(hidden, layer.ffn_out_kernel, layer.ffn_out_bias, dtype)

    @tf.function(input_signature=_SIGNATURE)
    def embed_tokens(self, input_ids: tf.Tensor, attention_mask: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._embed(input_ids, attention_mask, tf.float32)

    @tf.function(input_signature=_SIGNATURE)
    def embed_tokens_bf16(self, input_ids: tf.Tensor, attention_mask: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._embed(input_ids, attention_mask, tf.bfloat16)

    def _embed(self, input_ids: tf.Tensor, attention_mask: tf.Tensor, dtype: tf.DType) -> dict[str, tf.Tensor]:
        batch, tokens = tf.shape(input_ids)[0], tf.shape(input_ids)[1]
        x = (
            tf.gather(self.word_embeddings, input_ids)
            + tf.gather(self.position_embeddings, tf.range(tokens))[tf.newaxis]
            + self.token_type_embedding
        )
        x = self._layer_norm(
            tf.reshape(x, [batch * tokens, self.config.hidden_size]), self.embed_ln_gamma, self.embed_ln_beta
        )
        mask = tf.cast(attention_mask, tf.float32)
        mask_bias = (1.0 - mask[:, tf.newaxis, tf.newaxis, :]) * -1e9  # [B, 1, 1, T]
        counts = tf.maximum(tf.reduce_sum(mask, axis=1, keepdims=True), 1e-9)
        pools = []
        for layer in self.layers:
            x = self._layer_norm(
                x + self._attention(x, layer, batch, tokens, mask_bias, dtype), layer.attn_ln_gamma, layer.attn_ln_beta
            )
            x = self._layer_norm(x + self._feed_forward(x, layer, dtype), layer.ffn_ln_gamma, layer.ffn_ln_beta)
            pools.append(self._mean_pool(x, mask, counts, batch, tokens))
        # Every layer's pool, concatenated in layer order (embedder/features.py selects from it):
        # the sentence embedding is the last block.
        return {"embeddings": pools[-1], "layer_embeddings": tf.concat(pools, axis=1)}

    def _mean_pool(self, x: tf.Tensor, mask: tf.Tensor, counts: tf.Tensor, batch: tf.Tensor, tokens: tf.Tensor):
        """The L2-normalised mean of the unmasked token vectors of one layer's output [B*T, H]."""
        summed = tf.reduce_sum(tf.reshape(x, [batch, tokens, self.config.hidden_size]) * mask[:, :, tf.newaxis], axis=1)
        return tf.math.l2_normalize(summed / counts, axis=1, epsilon=1e-24)
