"""The PyTorch architectures: sizes from the papers, and outputs equal to torchvision's."""

import pytest
import torch
import torchvision
from model import AlexNet, LeNet5, ModelConfig, ResNet18, build_model, num_params


def test_lenet5_has_the_parameter_count_of_its_layer_table():
    # C1 6*(1*25+1), C3 16*(6*25+1), C5 120*(16*25+1), F6 84*(120+1), output 10*(84+1)
    expected = 6 * 26 + 16 * 151 + 120 * 401 + 84 * 121 + 10 * 85
    assert num_params(LeNet5(ModelConfig())) == expected == 61_706


def test_lenet5_maps_32x32_images_to_class_logits_in_both_variants():
    for name in ("lenet5", "lenet5-modern"):
        model = build_model(ModelConfig(name=name))
        assert model(torch.zeros(3, 1, 32, 32)).shape == (3, 10)


def test_modern_lenet5_uses_relu_max_pooling_and_batch_norm():
    kinds = {type(m) for m in build_model(ModelConfig(name="lenet5-modern")).modules()}
    assert {torch.nn.ReLU, torch.nn.MaxPool2d, torch.nn.BatchNorm2d} <= kinds
    assert torch.nn.Tanh not in kinds


def test_alexnet_and_resnet18_have_torchvisions_parameter_counts():
    imagenet = dict(in_channels=3, num_classes=1000, image_size=224)
    with torch.device("meta"):  # shapes only, no memory
        ours_alex = AlexNet(ModelConfig(name="alexnet", **imagenet))
        ours_res = ResNet18(ModelConfig(name="resnet18", cifar_stem=False, **imagenet))
    assert num_params(ours_alex) == 61_100_840  # torchvision's documented count
    assert num_params(ours_res) == 11_689_512


def _randomise_batchnorm(model):
    """Non-trivial running statistics, so that copying them is actually checked."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)


def test_resnet18_with_torchvisions_weights_gives_torchvisions_outputs():
    torch.manual_seed(0)
    ref = torchvision.models.resnet18(num_classes=7).double()
    _randomise_batchnorm(ref)
    ours = ResNet18(ModelConfig(name="resnet18", in_channels=3, num_classes=7, cifar_stem=False))
    ours = ours.double()
    ours.load_state_dict(ref.state_dict())  # strict: same names, same shapes
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    ref.eval(), ours.eval()
    assert torch.allclose(ours(x), ref(x), atol=1e-10)
    ref.train(), ours.train()  # batch statistics path too
    assert torch.allclose(ours(x), ref(x), atol=1e-10)


def test_alexnet_with_torchvisions_weights_gives_torchvisions_outputs():
    torch.manual_seed(0)
    ref = torchvision.models.alexnet(num_classes=5).double().eval()
    ours = AlexNet(ModelConfig(name="alexnet", in_channels=3, num_classes=5, image_size=127))
    ours = ours.double().eval()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 127, 127, dtype=torch.float64)
    assert torch.allclose(ours(x), ref(x), atol=1e-10)


def test_resnet18_basic_block_shortcut_halves_resolution_and_changes_width():
    model = ResNet18(ModelConfig(name="resnet18", width=0.25))
    block = model.layer2[0]
    assert block.downsample is not None and model.layer1[0].downsample is None
    assert block(torch.zeros(1, 16, 8, 8)).shape == (1, 32, 4, 4)


@pytest.mark.parametrize(
    "name, channels, size",
    [("resnet18", 1, 32), ("alexnet", 1, 64), ("mlp", 3, 16), ("resnet18", 3, 20)],
)
def test_every_model_maps_images_of_its_configured_size_to_logits(name, channels, size):
    cfg = ModelConfig(name=name, in_channels=channels, num_classes=4, image_size=size, width=0.125)
    model = build_model(cfg)
    assert model(torch.zeros(2, channels, size, size)).shape == (2, 4)


def test_a_few_steps_reduce_the_lenet5_loss():
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="lenet5"))
    x, y = torch.randn(32, 1, 32, 32), torch.randint(0, 10, (32,))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = torch.nn.functional.cross_entropy(model(x), y).item()
    for _ in range(20):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.nn.functional.cross_entropy(model(x), y).item() < 0.5 * first
