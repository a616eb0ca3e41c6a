"""The checkpoint-loading policy: weights_only first, an explicit allow-list for training state."""

from __future__ import annotations

import argparse
import io
import os
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch

from mae_dense.checkpoint import CheckpointError, load_file
from mae_dense.checkpoint.safe_load import resolve_url


def test_plain_state_dict(tmp_path):
    sd = OrderedDict(w=torch.randn(3, 2), b=torch.zeros(2))
    torch.save(sd, tmp_path / 'sd.pth')
    out = load_file(tmp_path / 'sd.pth')
    assert list(out) == ['w', 'b'] and torch.equal(out['w'], sd['w'])


def test_official_mae_training_checkpoint_with_namespace(tmp_path):
    args = argparse.Namespace(blr=1.5e-4, mask_ratio=0.75, norm_pix_loss=True, input_size=224)
    ckpt = {
        'model': {'w': torch.ones(2)},
        'optimizer': {},
        'epoch': 3,
        'scaler': {'scale': 65536.0},
        'args': args,
    }
    torch.save(ckpt, tmp_path / 'checkpoint-3.pth')
    out = load_file(tmp_path / 'checkpoint-3.pth')
    assert out['args'].mask_ratio == 0.75 and out['epoch'] == 3


def test_mmengine_message_hub_checkpoint(tmp_path):
    from mmengine.logging import HistoryBuffer, MessageHub

    hub = MessageHub.get_instance('test_safe_load')
    for i in range(5):
        hub.update_scalar('train/loss', float(i))
    hub.update_info('iter', np.int64(7))
    ckpt = {
        'meta': {'epoch': 1, 'iter': 7, 'seed': np.int64(3), 'dtype': np.dtype('float32')},
        'state_dict': {'w': torch.ones(1)},
        'message_hub': hub.state_dict(),
        'np_scalar': np.float64(0.5),
        'array': np.arange(3),
    }
    torch.save(ckpt, tmp_path / 'epoch_1.pth')
    out = load_file(tmp_path / 'epoch_1.pth')
    buf = out['message_hub']['log_scalars']['train/loss']
    assert isinstance(buf, HistoryBuffer) and buf.mean() == pytest.approx(2.0)
    assert out['meta']['seed'] == 3 and out['np_scalar'] == 0.5


class _Evil:
    def __reduce__(self):
        return (os.system, ('touch /tmp/mae_dense_pwned',))


def test_pickle_with_os_system_is_refused_without_running(tmp_path):
    marker = '/tmp/mae_dense_pwned'
    if os.path.exists(marker):
        os.remove(marker)
    torch.save({'state_dict': {'w': torch.ones(1)}, 'payload': _Evil()}, tmp_path / 'evil.pth')
    with pytest.raises(CheckpointError) as exc:
        load_file(tmp_path / 'evil.pth')
    msg = str(exc.value)
    assert 'evil.pth' in msg and ('posix.system' in msg or 'os.system' in msg) and 're-save' in msg
    assert '\n' not in msg
    assert not os.path.exists(marker)


def test_getattr_only_on_allowlisted_classes(tmp_path):
    from mmengine.logging import HistoryBuffer

    for owner, attr in [(argparse.Namespace, '__init__'), (HistoryBuffer, '__init__')]:

        class _GetattrEvil:
            def __reduce__(self, owner=owner, attr=attr):
                return (getattr, (owner, attr))

        torch.save({'x': _GetattrEvil()}, tmp_path / 'g.pth')
        with pytest.raises(
            CheckpointError, match=rf"getattr\({owner.__module__}.{owner.__qualname__}, '{attr}'\)"
        ):
            load_file(tmp_path / 'g.pth')


def test_detectron2_pkl_of_numpy_arrays(tmp_path):
    with open(tmp_path / 'model_final.pkl', 'wb') as f:
        pickle.dump(
            {'model': {'backbone.net.pos_embed': np.zeros((1, 5, 4), np.float32)}, '__author__': 'd2'}, f
        )
    out = load_file(tmp_path / 'model_final.pkl')
    assert out['model']['backbone.net.pos_embed'].shape == (1, 5, 4)


def test_safetensors(tmp_path):
    from safetensors.torch import save_file

    save_file({'a': torch.arange(4.0)}, str(tmp_path / 'm.safetensors'))
    assert torch.equal(load_file(tmp_path / 'm.safetensors')['a'], torch.arange(4.0))


def test_missing_file_one_line(tmp_path):
    with pytest.raises(CheckpointError, match=r'nope\.pth: checkpoint file not found'):
        load_file(tmp_path / 'nope.pth')


def test_url_goes_through_hub_cache_and_fails_clearly_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    url = 'https://127.0.0.1:9/models/mae_pretrain_vit_base.pth'
    with pytest.raises(CheckpointError) as exc:
        load_file(url)
    msg = str(exc.value)
    assert url in msg and 'download failed' in msg and str(tmp_path / 'hub' / 'checkpoints') in msg
    # A file already in the cache is used without any network access.
    (tmp_path / 'hub' / 'checkpoints').mkdir(parents=True, exist_ok=True)
    torch.save({'w': torch.ones(1)}, tmp_path / 'hub' / 'checkpoints' / 'mae_pretrain_vit_base.pth')
    assert resolve_url(url) == tmp_path / 'hub' / 'checkpoints' / 'mae_pretrain_vit_base.pth'
    assert torch.equal(load_file(url)['w'], torch.ones(1))


def test_checkpoint_sha256_of_a_path_or_a_cached_url_and_one_line_when_missing(tmp_path, monkeypatch):
    import hashlib

    from mae_dense.checkpoint import checkpoint_sha256, local_checkpoint

    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    cached = tmp_path / 'hub' / 'checkpoints' / 'w.pth'
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b'weights')
    sha = hashlib.sha256(b'weights').hexdigest()
    url = 'https://127.0.0.1:9/models/w.pth'
    assert checkpoint_sha256(cached) == checkpoint_sha256(url) == sha and local_checkpoint(url) == cached
    missing = str(tmp_path / 'gone.pth')
    with pytest.raises(CheckpointError) as exc:
        checkpoint_sha256(missing, 'model.pretrained')
    assert str(exc.value) == f'{missing}: checkpoint file not found (model.pretrained)'


def test_file_object():
    buf = io.BytesIO()
    torch.save({'w': torch.ones(2)}, buf)
    buf.seek(0)
    assert load_file(buf)['w'].shape == (2,)


@pytest.mark.parametrize('kind', ['random bytes', 'truncated zip', 'truncated legacy pickle'])
def test_a_corrupt_file_is_not_a_checkpoint_not_an_attack(tmp_path, kind):
    """Random bytes or a download cut short get 'not a checkpoint (...)', never the refusal meant for a
    pickle that names a global outside the policy."""
    import pickle

    path = tmp_path / 'bad.pth'
    if kind == 'random bytes':
        path.write_bytes(
            torch.randint(0, 256, (5000,), generator=torch.Generator().manual_seed(0))
            .byte()
            .numpy()
            .tobytes()
        )
    elif kind == 'truncated zip':
        torch.save({'w': torch.randn(64, 64)}, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(pickle.dumps({'w': 1})[:5])
    with pytest.raises(CheckpointError) as info:
        load_file(path)
    msg = str(info.value)
    assert msg.startswith(f'{path}: not a checkpoint (') and 'unpickle' not in msg and '\n' not in msg, msg
    if kind == 'truncated zip':
        assert 'cut short' in msg
