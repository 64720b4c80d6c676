"""Training the codec with EnCodec's objectives.

Generator loss = ``l1`` x time-domain L1 + ``mel`` x multi-scale mel (L1 on log-mel plus L2 on
mel, windows 64..2048) + ``stft`` x multi-resolution complex-STFT L1 at small windows (a
waveform-aligned term: it penalises wrong phase, which the mel terms cannot see) + commitment
+ ``pitch`` x log-magnitude STFT L1 at long windows below 4 kHz (mel bands are several semitones
wide there, so the mel terms let a codec lose pitch: ours kept no key a key-finder could read)
+ ``chroma`` x L1 between per-frame pitch-class profiles (55-1000 Hz, long windows): the
harmony itself, what a listener (and the key-finder) hears as key and chords
+ (from ``adv_start``) ``adv`` x least-squares adversarial loss and ``feat`` x feature matching
against a multi-scale complex-STFT discriminator (EnCodec's MS-STFTD). The codebooks move by
EMA, not by gradients; dead codes restart from the batch. EnCodec's dead-code threshold of 2
assumes far bigger batches: here it is ``dead_code_fraction`` x the average use of a code per
step (global batch x frames / codebook size), at most the config's threshold.

``decoder_only`` fine-tunes the decoder of a trained codec with its encoder and codebooks frozen:
the codes stay exactly what they were, so LMs trained on them stay valid.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import weight_norm

from engine.models.encodec import CodecConfig, EncodecModel
from engine.recipes.training.common import (Dist, all_gather_cat, clip_and_step, make_optimizer,
                                            read_trained, save_trained, warmup_cosine, wrap_ddp)
from engine.recipes.training.dataset import AudioCrops
from engine.recipes.training.spectra import MEL_SCALES, mel_spectrogram, pitch_classes


def multiscale_mel_loss(ref: torch.Tensor, est: torch.Tensor, sample_rate: int,
                        scales: tuple[int, ...] = MEL_SCALES, eps: float = 1e-5) -> torch.Tensor:
    """EnCodec's L_f: per window, L1 of log-mel plus the L2 distance of mel (mean over scales)."""
    total = ref.new_zeros(())
    for n_fft in scales:
        a, b = mel_spectrogram(ref, sample_rate, n_fft), mel_spectrogram(est, sample_rate, n_fft)
        total = total + (torch.log(a + eps) - torch.log(b + eps)).abs().mean()
        total = total + (a - b).pow(2).mean().add(1e-12).sqrt()
    return total / len(scales)


def complex_stft_loss(ref: torch.Tensor, est: torch.Tensor, windows: tuple[int, ...] = (64, 128, 256, 512)) -> torch.Tensor:
    """L1 between complex STFTs (real and imaginary parts), normalised by the reference's mean
    magnitude per window: small windows keep the term sensitive to waveform alignment."""
    total = ref.new_zeros(())
    for n in windows:
        win = torch.hann_window(n, device=ref.device)
        a = torch.stft(ref.reshape(-1, ref.shape[-1]), n, n // 4, window=win, return_complex=True)
        b = torch.stft(est.reshape(-1, est.shape[-1]), n, n // 4, window=win, return_complex=True)
        total = total + (torch.view_as_real(a) - torch.view_as_real(b)).abs().mean() / (a.abs().mean() + 1e-7)
    return total / len(windows)


def pitch_stft_loss(ref: torch.Tensor, est: torch.Tensor, sample_rate: int,
                    windows: tuple[int, ...] = (2048, 4096), max_hz: float = 4000.0,
                    eps: float = 1e-5) -> torch.Tensor:
    """L1 between log power spectra at long windows (7.8-15.6 Hz bins at 32 kHz: a semitone at
    A2 is 6.5 Hz wide), on the bins below ``max_hz`` where pitch and its low partials live."""
    total = ref.new_zeros(())
    for n in windows:
        win = torch.hann_window(n, device=ref.device)
        keep = int(max_hz * n / sample_rate) + 1
        a, b = (torch.stft(x.reshape(-1, x.shape[-1]), n, n // 4, window=win, normalized=True,
                           return_complex=True)[:, :keep].abs().pow(2) for x in (ref, est))
        total = total + (torch.log(a + eps) - torch.log(b + eps)).abs().mean()
    return total / len(windows)


@lru_cache(maxsize=None)
def _pitch_class_matrix(n_fft: int, sample_rate: int, fmin: float, fmax: float) -> tuple[slice, torch.Tensor]:
    """(bins slice, [12, bins] one-hot map of each STFT bin in [fmin, fmax] to its pitch class,
    as the key-finder maps them)."""
    lo, hi = int(fmin * n_fft / sample_rate) + 1, int(fmax * n_fft / sample_rate) + 1
    pcs = torch.from_numpy(pitch_classes(np.arange(lo, hi) * sample_rate / n_fft))
    return slice(lo, hi), F.one_hot(pcs, 12).T.float()


def chroma_loss(ref: torch.Tensor, est: torch.Tensor, sample_rate: int,
                windows: tuple[int, ...] = (4096, 8192), fmin: float = 55.0,
                fmax: float = 1000.0) -> torch.Tensor:
    """L1 between per-frame chroma (log-compressed magnitudes summed per pitch class, each frame
    normalised to sum 1), x 12 so a wholly wrong profile costs about 1-2."""
    if ref.shape[-1] <= max(windows) // 2:
        raise ValueError(f"chroma_loss needs clips longer than {max(windows) // 2} samples (half its "
                         f"longest window), got {ref.shape[-1]}: use longer crops (--crop-s)")
    total = ref.new_zeros(())
    for n in windows:
        win = torch.hann_window(n, device=ref.device)
        bins, pc = _pitch_class_matrix(n, sample_rate, fmin, fmax)
        pc = pc.to(ref.device)
        profiles = []
        for x in (ref, est):
            mag = torch.stft(x.reshape(-1, x.shape[-1]), n, n // 4, window=win,
                             return_complex=True)[:, bins].abs() / win.sum()
            c = torch.einsum("pf,bft->bpt", pc, torch.log1p(100 * mag))
            profiles.append(c / (c.sum(dim=1, keepdim=True) + 1e-4))
        total = total + 12 * (profiles[0] - profiles[1]).abs().mean()
    return total / len(windows)


class STFTDiscriminator(nn.Module):
    """One scale of the MS-STFT discriminator: 2-D convs over the complex spectrogram (re, im)."""

    def __init__(self, filters: int, n_fft: int):
        super().__init__()
        self.n_fft = n_fft
        conv = lambda i, o, k, s=(1, 1), d=(1, 1): weight_norm(nn.Conv2d(  # noqa: E731
            i, o, k, s, dilation=d, padding=((k[0] - 1) * d[0] // 2, (k[1] - 1) * d[1] // 2)))
        self.convs = nn.ModuleList([conv(2, filters, (3, 9))] + [
            conv(filters, filters, (3, 9), (1, 2), (d, 1)) for d in (1, 2, 4)] + [conv(filters, filters, (3, 3))])
        self.post = conv(filters, 1, (3, 3))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """wav [B, 1, N] -> (logits [B, 1, T', F'], feature maps)."""
        win = torch.hann_window(self.n_fft, device=wav.device)
        z = torch.stft(wav.reshape(-1, wav.shape[-1]), self.n_fft, self.n_fft // 4, window=win,
                       normalized=True, return_complex=True)              # [B, F, T]
        x = torch.view_as_real(z).permute(0, 3, 2, 1)                     # [B, 2, T, F]
        feats = []
        for c in self.convs:
            x = F.leaky_relu(c(x), 0.2)
            feats.append(x)
        return self.post(x), feats


class MultiScaleSTFTDiscriminator(nn.Module):
    """EnCodec's MS-STFTD: the same discriminator on three STFT resolutions."""

    def __init__(self, filters: int = 16, n_ffts: tuple[int, ...] = (1024, 2048, 512)):
        super().__init__()
        self.discriminators = nn.ModuleList(STFTDiscriminator(filters, n) for n in n_ffts)

    def forward(self, wav: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        return [d(wav) for d in self.discriminators]


@dataclass(frozen=True)
class CodecLossWeights:
    l1: float = 0.1
    mel: float = 1.0
    stft: float = 1.0
    commit: float = 1.0
    adv: float = 1.0
    feat: float = 1.0
    pitch: float = 0.0
    chroma: float = 0.0


def dead_code_threshold(global_batch: int, frames: int, bins: int, fraction: float, cap: float) -> float:
    """``fraction`` x the average hits per code per step, at most ``cap`` (EnCodec uses 2.0)."""
    return min(cap, fraction * global_batch * frames / bins)


class CodecTask:
    """The codec objective for ``run_training``; ``adv_start`` < 0 turns the discriminator off."""

    def __init__(self, config: CodecConfig, data: AudioCrops, dist: Dist, *, batch_size: int,
                 lr: float, steps: int, warmup: int = 200, grad_clip: float = 1.0,
                 weights: CodecLossWeights = CodecLossWeights(), adv_start: int = -1,
                 disc_filters: int = 16, dead_code_fraction: float = 0.2, seed: int = 0,
                 init_state: dict[str, torch.Tensor] | None = None, decoder_only: bool = False):
        """``init_state``: a trained codec's weights to start from (same config; without its
        ``decoder.*`` entries the decoder starts fresh, e.g. a new kind of decoder);
        ``decoder_only`` (needs it): train the decoder alone, encoder and codebooks frozen."""
        if decoder_only and init_state is None:
            raise ValueError("decoder_only fine-tunes a trained codec: give its weights (--init-from)")
        self.config, self.data, self.dist = config, data, dist
        self.decoder_only = decoder_only
        self.batch_size, self.grad_clip, self.weights, self.adv_start = batch_size, grad_clip, weights, adv_start
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)                       # same initial weights on every rank
            self.model = EncodecModel(config).to(dist.device)
            if init_state is not None:
                missing, unexpected = self.model.load_state_dict(init_state, strict=False)
                if unexpected or any(not k.startswith("decoder.") for k in missing):
                    raise ValueError(f"init_state does not fit this codec: unexpected {unexpected}, "
                                     f"missing {[k for k in missing if not k.startswith('decoder.')]}")
            if decoder_only:
                self.model.encoder.requires_grad_(False)
                if self.model.pitch_encoder is not None:
                    self.model.pitch_encoder.requires_grad_(False)
                self.model.quantizer.requires_grad_(False)
            self.disc = MultiScaleSTFTDiscriminator(disc_filters).to(dist.device) if adv_start >= 0 else None
        frames = -(-data.crop // config.hop_length)
        thr = dead_code_threshold(batch_size * dist.world, frames, config.bins, dead_code_fraction,
                                  config.threshold_ema_dead_code)
        for layer in self.model.quantizer.layers:
            layer._codebook.threshold_ema_dead_code = thr
        self.ddp = wrap_ddp(self.model, dist)
        self.opt = make_optimizer(self.model.named_parameters(), lr, weight_decay=0.0, betas=(0.5, 0.9))
        self.sched = warmup_cosine(self.opt, warmup, steps)
        if self.disc is not None:
            self.ddp_disc = wrap_ddp(self.disc, dist)
            self.opt_d = make_optimizer(self.disc.named_parameters(), lr, weight_decay=0.0, betas=(0.5, 0.9))
            self.sched_d = warmup_cosine(self.opt_d, warmup, steps)

    def state(self) -> dict[str, object]:
        s = {"model": self.model, "opt": self.opt, "sched": self.sched}
        if self.disc is not None:
            s.update(disc=self.disc, opt_d=self.opt_d, sched_d=self.sched_d)
        return s

    def losses(self, wav: torch.Tensor, recon: torch.Tensor) -> dict[str, torch.Tensor]:
        """The reconstruction terms for ``wav`` / ``recon`` [B, 1, N] (no adversarial part)."""
        sr = self.config.sample_rate
        terms = {"l1": F.l1_loss(recon, wav), "mel": multiscale_mel_loss(wav, recon, sr),
                 "stft": complex_stft_loss(wav, recon)}
        if self.weights.pitch:
            terms["pitch"] = pitch_stft_loss(wav, recon, sr)
        if self.weights.chroma:
            terms["chroma"] = chroma_loss(wav, recon, sr)
        return terms

    @torch.no_grad()
    def eval_loss(self, wav: torch.Tensor) -> float:
        """The weighted reconstruction + commitment loss on ``wav`` [B, 1, N], no update."""
        self.model.eval()
        out = self.model(wav.to(self.dist.device))
        terms = self.losses(wav.to(self.dist.device), out.audio)
        terms["commit"] = out.commit_loss
        return float(sum(getattr(self.weights, k) * v for k, v in terms.items()))

    def train_step(self, step: int) -> dict[str, float]:
        return self.update(self.data.sample(self.batch_size), step)

    def update(self, wav: torch.Tensor, step: int) -> dict[str, float]:
        """One optimisation step on the batch ``wav`` [B, 1, N]; returns the loss terms."""
        wav = wav.to(self.dist.device)
        self.model.train()
        out = self.ddp(wav)
        terms = self.losses(wav, out.audio)
        terms["commit"] = out.commit_loss
        w = self.weights
        use_adv = self.disc is not None and step >= self.adv_start
        if use_adv:
            both = self.ddp_disc(torch.cat([wav, out.audio.detach()]))      # real and fake in one pass
            d_loss = sum((1 - logits[:len(wav)]).pow(2).mean() + logits[len(wav):].pow(2).mean()
                         for logits, _ in both)
            d_loss.backward()
            clip_and_step(self.disc, self.opt_d, self.sched_d, self.grad_clip)
            with torch.no_grad():
                real_out = self.disc(wav)
            adv, feat = 0.0, 0.0
            for (fake, f_fake), (_, f_real) in zip(self.disc(out.audio), real_out):
                adv = adv + (1 - fake).pow(2).mean()
                feat = feat + sum((a - b).abs().mean() / (b.abs().mean() + 1e-7)
                                  for a, b in zip(f_fake, f_real)) / len(f_real)
            terms["adv"], terms["feat"] = adv / len(real_out), feat / len(real_out)
            terms["disc"] = d_loss.detach()
        total = sum(getattr(w, k) * v for k, v in terms.items() if k != "disc")
        total.backward()
        if use_adv:
            self.disc.zero_grad(set_to_none=True)
        clip_and_step(self.model, self.opt, self.sched, self.grad_clip)
        if not self.decoder_only:                         # frozen codebooks: the codes stay as trained
            latent = all_gather_cat(out.latent.detach(), self.dist)        # [B_global, D, T]
            codes = all_gather_cat(out.codes, self.dist)                    # [B_global, K, T]
            self.model.quantizer.ema_update(latent, codes)  # same data + same RNG: ranks stay equal
        result = {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in terms.items()}
        result["loss"] = float(total.detach())
        return result

    def export(self, out_dir: Path, step: int, losses: dict[str, float]) -> None:
        """``codec.safetensors`` + ``codec.json`` (config, steps, last losses) into ``out_dir``."""
        save_trained(out_dir, "codec", self.model, {
            "codec": self.config.to_dict(), "steps": step, "losses": losses,
            "batch_size": self.batch_size, "world": self.dist.world,
            "crop_samples": self.data.crop, "train_seconds": self.data.seconds})


def load_trained_codec(directory: str | Path) -> EncodecModel:
    """The codec a ``train codec`` run wrote into ``directory`` (eval mode)."""
    state, meta = read_trained(directory, "codec", "train codec")
    model = EncodecModel(CodecConfig.from_dict(meta["codec"]))
    model.load_state_dict(state)
    return model.eval()
