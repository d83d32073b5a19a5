import pytest
import torch

from dice_pack.sharpeners import Sharpener, SharpenerConfig


def test_paper_sized_network_has_about_1_8_million_parameters():
    assert Sharpener().parameter_count() == 1_836_800


@pytest.mark.parametrize("width", [768, 1024, 2048, 4096])
def test_residual_has_the_shape_of_c_for_every_family_width(width):
    network = Sharpener(SharpenerConfig(embed_dim=width))
    c, c_ref = torch.randn(2, 77, width), torch.randn(2, 77, width)
    assert network(c, c_ref).shape == (2, 77, width)


def test_residual_depends_on_the_reference():
    torch.manual_seed(0)
    network = Sharpener()
    c = torch.randn(1, 77, 768)
    assert not torch.allclose(network(c, torch.randn(1, 77, 768)), network(c, torch.randn(1, 77, 768)))


def test_hidden_width_must_split_evenly_into_heads():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        SharpenerConfig(hidden_dim=500, num_heads=8)


def test_attention_over_alike_reference_tokens_alone_gives_one_residual_for_every_token():
    torch.manual_seed(0)
    c, alike = torch.randn(1, 77, 768), torch.randn(1, 1, 768).expand(1, 77, 768)
    paper = Sharpener(SharpenerConfig(attention_context="reference"))(c, alike)
    assert torch.allclose(paper, paper[:, :1].expand_as(paper), atol=1e-5)
    torch.manual_seed(0)
    wider = Sharpener(SharpenerConfig(attention_context="prompt+reference"))(c, alike)
    assert not torch.allclose(wider, wider[:, :1].expand_as(wider), atol=1e-3)


def test_attention_context_must_be_known():
    with pytest.raises(ValueError, match="attention_context must be one of"):
        SharpenerConfig(attention_context="everything")
