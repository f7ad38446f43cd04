"""`lodo-tune meta-train`: the L2LBGDBGD meta-training subcommand."""
import torch

import cli


def test_meta_train_writes_a_checkpoint_and_resumes(tmp_path, capsys):
    out = tmp_path / "l2l.pt"
    args = ["meta-train", "--out", str(out), "--batch-of-bowls", "2", "--no-progress"]
    assert cli.main(args + ["--steps", "2"]) == 0
    first = torch.load(out, weights_only=False)
    assert cli.main(args + ["--steps", "3", "--resume"]) == 0
    second = torch.load(out, weights_only=False)
    assert first["meta"]["step"] == 2 and second["meta"]["step"] == 3  # resumed, one more meta-step
    changed = [not torch.equal(first["net"][k], second["net"][k]) for k in first["net"]]
    assert any(changed)
    assert "wrote" in capsys.readouterr().out


def test_meta_train_bad_setting_is_one_line_and_exit_2(tmp_path, capsys):
    assert cli.main(["meta-train", "--steps", "0", "--out", str(tmp_path / "x.pt"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "steps" in err[0]
    assert not (tmp_path / "x.pt").exists()
