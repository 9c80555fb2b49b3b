"""A ResNet for small images: a 3×3 stem and stages of basic residual units (no stem pooling).

Units keep torchvision's attribute names (``conv1``, ``bn1``, ``conv2``, ``bn2``) and name their
projection ``shortcut``, so the adapter finds branch and shortcut the same way as in timm and
torchvision ResNets (docs/methods.md §5: ‖shortcut‖/‖branch‖ per unit).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import Tensor, nn


@dataclass(frozen=True)
class ResNetConfig:
    """Architecture of :class:`ResNet`; stored beside every checkpoint."""

    in_channels: int = 1
    widths: tuple[int, ...] = (32, 64, 128)
    units_per_stage: tuple[int, ...] = (2, 2, 2)
    num_classes: int = 10

    def __post_init__(self) -> None:
        if len(self.widths) != len(self.units_per_stage):
            raise ValueError(f"widths {self.widths} and units_per_stage {self.units_per_stage} differ in length")
        object.__setattr__(self, "widths", tuple(self.widths))
        object.__setattr__(self, "units_per_stage", tuple(self.units_per_stage))

    def to_dict(self) -> dict:
        return asdict(self)


class BasicUnit(nn.Module):
    """out = ReLU(branch(x) + shortcut(x)); branch = conv-BN-ReLU-conv-BN."""

    def __init__(self, in_width: int, width: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_width, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        if stride != 1 or in_width != width:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_width, width, 1, stride=stride, bias=False), nn.BatchNorm2d(width)
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        branch = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(branch + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        self.config = config
        first = config.widths[0]
        self.stem = nn.Sequential(
            nn.Conv2d(config.in_channels, first, 3, padding=1, bias=False), nn.BatchNorm2d(first), nn.ReLU()
        )
        stages = []
        in_width = first
        for index, (width, units) in enumerate(zip(config.widths, config.units_per_stage)):
            stride = 1 if index == 0 else 2
            stage = []
            for unit in range(units):
                stage.append(BasicUnit(in_width, width, stride if unit == 0 else 1))
                in_width = width
            stages.append(nn.Sequential(*stage))
        self.stages = nn.ModuleList(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(in_width, config.num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        for stage in self.stages:  # zero-init the last BN of each branch: units start as identities
            for unit in stage:
                nn.init.zeros_(unit.bn2.weight)

    def forward_features(self, images: Tensor) -> Tensor:
        x = self.stem(images)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.pool(self.forward_features(images)).flatten(1))
