"""The luminance domains' visibility rule (issue 10): in sketch, thermal and x-ray every subject stands out from
its background, checked on every layout of the default splits and on the pixels of the evaluations' split."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from florence_lib.data.world import (
    MIN_SUBJECT_CONTRAST,
    Layout,
    World,
    WorldClassification,
    WorldConfig,
    subject_contrast,
    visible_layout,
)
from florence_lib.data.world_render import (
    _RGB,
    BACKGROUND_NAMES,
    COLOUR_NAMES,
    LUMA,
    LUMINANCE_DOMAINS,
    Sprite,
    _draw_shape,
    apply_domain,
    render_sprites,
)
from florence_lib.data.world_text import WorldObject

SIZE, QUICK_IMAGES = 48, 600  # what the quick few-shot evaluation draws: world-<domain>, test split, 48 px


@pytest.fixture(scope="module")
def world() -> World:
    return World(WorldConfig(seed=0, image_size=SIZE, label_by="shape"))


def test_every_layout_of_every_split_meets_the_rule_in_the_luminance_domains(world):
    moved = 0
    for split in ("test", "heldout"):
        for i in range(world.split_size(split)):
            drawn = world.layout(split, i)
            for domain in LUMINANCE_DOMAINS:
                shown = world.domain_layout(split, i, domain)
                assert subject_contrast(shown) >= MIN_SUBJECT_CONTRAST, (split, i, domain)
                assert shown.objects == drawn.objects  # same objects, same label: only the background moves
            moved += shown != drawn
            for domain in ("clean", "photo"):
                assert world.domain_layout(split, i, domain) == drawn
    assert 0.1 < moved / 3000 < 0.35  # the rule bites (22% of the quick split before it), but is no new world


def test_no_colour_position_or_gradient_is_left_without_a_background():
    for colour in range(len(COLOUR_NAMES)):
        for gradient in range(3):
            for background in range(len(BACKGROUND_NAMES)):
                for cx in np.linspace(0.1, 0.9, 9):
                    for cy in np.linspace(0.1, 0.9, 9):
                        subject = WorldObject(0, colour, 1, 0, 4, float(cx), float(cy))
                        layout = visible_layout(Layout((subject,), background, gradient))
                        assert subject_contrast(layout) >= MIN_SUBJECT_CONTRAST


def _subject_mask(layout: Layout) -> np.ndarray:
    o = layout.objects[0]
    sprite = Sprite(o.shape, o.colour, o.texture, o.cx * SIZE, o.cy * SIZE, 0.15 * SIZE)
    mask = Image.new("L", (SIZE, SIZE))
    _draw_shape(ImageDraw.Draw(mask), sprite, 0, 0)
    return np.asarray(mask) > 127


def test_every_subject_of_the_evaluated_split_is_visible_on_pixels(world):
    """Checked on the drawn pixels: the subject's main-colour pixels against the background drawn under them (a
    gradient varies across the subject, hence 3 below the centre rule), and the subject's footprint in each
    domain image (the domain image with vs without it; before the rule 0.5-4.5% of scenes were under 10)."""
    data = WorldClassification(world, "test", QUICK_IMAGES, domain="thermal")
    assert data.targets == [world.label_of(world.layout("test", i)) for i in range(len(data))]
    rng = np.random.default_rng(0)
    for i in range(len(data)):
        layout = world.domain_layout("test", i, "thermal")
        sprites = [Sprite(o.shape, o.colour, o.texture, o.cx * SIZE, o.cy * SIZE, (0.15 if k == 0 else 0.09) * SIZE)
                   for k, o in enumerate(layout.objects)]
        image, _ = render_sprites(layout.background, layout.gradient, SIZE, sprites)
        without, _ = render_sprites(layout.background, layout.gradient, SIZE, sprites[1:])
        mask = _subject_mask(layout)
        main = mask & np.all(image == _RGB[layout.objects[0].colour], axis=-1)
        contrast = np.abs((image.astype(np.float32) - without) @ LUMA)[main].mean()
        assert contrast >= MIN_SUBJECT_CONTRAST - 3, (i, contrast)
        for domain in LUMINANCE_DOMAINS:
            shown = apply_domain(image, domain, rng).astype(np.float32)
            assert np.array_equal(shown, world.scene("test", i, domain).image), (i, domain)  # what the set shows
            footprint = np.abs(shown - apply_domain(without, domain, rng)).mean(-1).sum() / mask.sum()
            assert footprint >= 5, (i, domain, footprint)
