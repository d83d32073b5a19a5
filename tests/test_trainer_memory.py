"""The trainer on a GPU it must fit: memory measured per sample, micro-batches whose gradient is the full batch's,
activation checkpointing, the plan it prints, a clear out-of-memory error, and precisions that still learn."""
import pytest
import torch

from dice_pack.sharpeners import Sharpener, SharpenerConfig
from dice_pack.training.cli import main
from dice_pack.training.memory import PeakMemory
from dice_pack.training.plan import choose_micro_batch, make_plan
from dice_pack.training.precision import loss_scaler
from dice_pack.training.step import accumulate_gradients, make_batch, single_call
from dice_pack.training.student import Student
import dice_pack.training.testbed.model as testbed_model

CPU = torch.device("cpu")
load_testbed = testbed_model.Testbed.load


@pytest.fixture(scope="module", name="testbed")
def loaded_testbed():
    return load_testbed()


def fresh_sharpener(testbed) -> Student:
    torch.manual_seed(0)
    return Student(Sharpener(SharpenerConfig(embed_dim=testbed.embed_dim)))


def gradients(sharpener, testbed, batch, micro_batch) -> dict:
    sharpener.zero_grad(set_to_none=True)
    loss = accumulate_gradients(sharpener, testbed, batch, micro_batch, guidance=5.0, loss_kind="l1")
    return {"loss": loss, **{name: p.grad.clone() for name, p in sharpener.named_parameters()}}


def test_micro_batches_give_the_full_batch_gradient(testbed):
    sharpener = fresh_sharpener(testbed)
    batch = make_batch(testbed, 10, torch.Generator().manual_seed(3), [], CPU)
    whole = gradients(sharpener, testbed, batch, 10)
    for micro in (1, 3, 4):  # 3 and 4 leave a smaller last part
        parts = gradients(sharpener, testbed, batch, micro)
        assert parts["loss"] == pytest.approx(whole["loss"], rel=1e-5)
        for name, value in whole.items():
            if name != "loss":
                torch.testing.assert_close(parts[name], value, rtol=1e-4, atol=1e-7, msg=f"{name} at micro-batch {micro}")


def test_peak_memory_counts_what_a_piece_of_work_holds_at_once():
    with PeakMemory(CPU) as meter:
        a = torch.ones(1 << 20)  # 4 MiB
        b = a * 2  # 4 MiB more while a lives
        del a, b
        c = torch.ones(1 << 18)  # 1 MiB, after both were freed
    assert (8 << 20) <= meter.bytes < (9 << 20)
    del c


def student_pass_memory(testbed, batch) -> int:
    """Peak memory of the UNet's forward and backward with the gradient flowing to the context, as the student's."""
    context = batch["c"].clone().requires_grad_()
    with PeakMemory(CPU) as meter:
        single_call(testbed, batch, context).abs().mean().backward()
    return meter.bytes


def test_checkpointing_the_frozen_unet_saves_memory_and_keeps_the_gradient(testbed):
    batch = make_batch(testbed, 32, torch.Generator().manual_seed(5), [], CPU)
    sharpener = fresh_sharpener(testbed)
    plain_memory, plain = student_pass_memory(testbed, batch), gradients(sharpener, testbed, batch, 32)
    checkpointed_testbed = load_testbed()
    assert checkpointed_testbed.checkpoint_layers() > 0
    checkpointed_memory = student_pass_memory(checkpointed_testbed, batch)
    checkpointed = gradients(sharpener, checkpointed_testbed, batch, 32)
    # Measured here: 33.1 MB without, 16.2 MB with (the res-blocks' and transformers' activations are recomputed).
    assert checkpointed_memory < 0.7 * plain_memory, (checkpointed_memory, plain_memory)
    for name, value in plain.items():
        if name != "loss":
            torch.testing.assert_close(checkpointed[name], value, rtol=1e-4, atol=1e-7)


def test_the_micro_batch_is_the_most_samples_that_fit(monkeypatch):
    mib = 1 << 20
    assert choose_micro_batch(16, 100 * mib, 10_000 * mib, 0)[0] == 16
    micro, reason = choose_micro_batch(16, 100 * mib, 1000 * mib, 0)
    assert micro == 8 and "gradients accumulated" in reason  # 85 % of 1000 MiB holds 8 samples of 100 MiB
    assert choose_micro_batch(16, 100 * mib, 50 * mib, 0)[0] == 0
    assert choose_micro_batch(16, 100 * mib, 50 * mib, 4) == (4, "set by --micro-batch")


def test_when_one_sample_does_not_fit_the_plan_turns_on_checkpointing_and_says_why(monkeypatch):
    import dice_pack.training.plan as plan_module

    mib = 1 << 20

    def measured(backend, *args):
        """SD-like figures: the student's backward dominates until the UNet's layers are checkpointed."""
        checkpointed = any(getattr(m, "_dice_checkpointed", False) for m in backend.unet.modules())
        return (1 * mib, 4 * mib if checkpointed else 10 * mib)

    monkeypatch.setattr(plan_module, "sample_memory", measured)
    monkeypatch.setattr(plan_module, "free_memory", lambda device: int(6 * mib / plan_module.HEADROOM))
    sharpener, generator = fresh_sharpener(load_testbed()), torch.Generator().manual_seed(7)

    def plan(testbed):
        make = lambda count: make_batch(testbed, count, generator, [], CPU)  # noqa: E731
        return make_plan(testbed, sharpener, make, 8, 5.0, "l1", CPU)

    testbed = load_testbed()
    tight = plan(testbed)
    assert tight.checkpointing and tight.micro_batch == 1
    assert any(getattr(m, "_dice_checkpointed", False) for m in testbed.unet.modules())
    assert tight.reason.startswith("10.0 MiB a sample without activation checkpointing; with it, 8 samples would need")
    monkeypatch.setattr(plan_module, "free_memory", lambda device: 3 * mib)
    with pytest.raises(SystemExit, match=r"one training sample needs 4.0 MiB and 3.0 MiB is free on cpu: lower "
                                         r"--resolution$"):
        plan(load_testbed())


def test_the_plan_is_printed_before_training_with_the_default_runs_time(tmp_path, capsys):
    main(["--testbed", "--runs", str(tmp_path / "runs"), "--sample-every", "0", "--steps", "2", "--batch", "4",
          "--micro-batch", "3", "--out", str(tmp_path / "s.safetensors")])
    printed = capsys.readouterr().out
    assert "plan: 2 steps × 4 samples × 1 process(es) = 8 samples" in printed
    assert "micro-batch 3 (set by --micro-batch)" in printed
    assert "estimated time for this run" in printed and "the default run (1,200 steps × 32) would take" in printed


def test_out_of_memory_names_the_flag_to_lower_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    import dice_pack.training.student as student_module

    common = ["--testbed", "--runs", str(tmp_path / "runs"), "--sample-every", "0", "--batch", "4",
              "--micro-batch", "4", "--save-every", "2", "--out", str(tmp_path / "s.safetensors")]
    main([*common, "--steps", "2"])
    saved = (tmp_path / "runs" / "testbed" / "checkpoint.pt").read_bytes()
    real, student_calls = student_module.Student.forward, []

    def runs_out(self, backend, batch):
        if torch.is_grad_enabled():
            student_calls.append(len(batch["x"]))
            if len(student_calls) == 3:  # the plan's memory probe and warm-up step went through, step 3 does not
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, backend, batch)

    monkeypatch.setattr(student_module.Student, "forward", runs_out)
    with pytest.raises(SystemExit, match=r"out of memory at step 3 with micro-batch 4 of 4 samples: pass "
                                         r"--micro-batch 2 .*checkpoint.pt, is intact: add --resume"):
        main([*common, "--steps", "4", "--resume"])
    assert (tmp_path / "runs" / "testbed" / "checkpoint.pt").read_bytes() == saved


def test_loss_scaling_is_on_exactly_when_the_model_computes_in_fp16():
    assert loss_scaler(torch.float16, CPU).is_enabled()
    assert not loss_scaler(torch.bfloat16, CPU).is_enabled()
    assert not loss_scaler(torch.float32, CPU).is_enabled()


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_a_low_precision_unet_learns_as_the_fp32_one_does(tmp_path, precision):
    # The testbed UNet's arithmetic in bf16 or fp16 (as ComfyUI runs SD on a GPU); fp16 trains with loss scaling.
    common = ["--testbed", "--runs", str(tmp_path / "runs"), "--sample-every", "0", "--steps", "60", "--batch", "16",
              "--eval-batch", "32", "--threads", "2"]
    full = main([*common, "--name", "fp32", "--mixed-precision", "fp32", "--out", str(tmp_path / "a.safetensors")])
    low = main([*common, "--name", precision, "--mixed-precision", precision, "--out", str(tmp_path / "b.safetensors")])
    assert low["precision"] == precision
    fell_full = full["held_out_before"]["ratio"] - full["held_out_after"]["ratio"]
    fell_low = low["held_out_before"]["ratio"] - low["held_out_after"]["ratio"]
    assert fell_full > 0.03, full
    assert fell_low > 0.7 * fell_full, (low, full)
