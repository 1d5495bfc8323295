"""Every default of ``faceaudit data inspect``, with the reason for each; import-light so the CLI can show them.

Move these into ``faceaudit.config`` if the project wants every default in one file; the inspection modules
read them from here.
"""

from __future__ import annotations

#: Side, in pixels, every image is resized to before MTCNN: one size for every set, so 200 px crops are
#: downsampled (faster) and 64 px crops upsampled 2x. Measured on 192 UTKFace-64px images: 64 px (native) found a
#: face in all 192 at 70 img/s, 96 px in 191, 128 px in 192 at 38 img/s, 160 px in 190 at 22 img/s, so
#: ``--face-size 64`` is a safe ~1.8x speed-up for 64 px sets; on 200 px crops 128 px missed fewer faces than 160 px.
FACE_IMAGE_SIZE = 128
#: An image counts as a face when MTCNN's final (ONet) confidence reaches this; below, it is a non-face.
FACE_CONFIDENCE = 0.90
#: Images per MTCNN call (the package stacks a list of equal-size images into one batch: ~5x faster than singly).
FACE_BATCH = 32
#: Largest pHash Hamming distance (of 64 bits) counted as a near-duplicate. pHash bits are half ones, so distances
#: are even. On UTKFace-64px, sampled pairs at 0 and 2 were all the same photo; at 4 about a quarter were
#: different people, at 6 most were. Re-encoding or resizing one photo stays within a couple of bits.
NEAR_DISTANCE = 2
#: Share of images the Isolation Forest calls outliers (1%: about 200 of UTKFace's 21k, a reviewable list).
OUTLIER_SHARE = 0.01
#: Mean luma (0-255) below which an image is very dark (the seed notebook's cut), and the borderline band's top.
DARK_BELOW, DARK_BORDERLINE = 50.0, 55.0
#: Mean luma above which an image is washed out (the dark cut mirrored: 255 - 50), and the borderline band's bottom.
WASHED_OUT_ABOVE, WASHED_OUT_BORDERLINE = 205.0, 200.0
#: Groups smaller than this are too small to audit (the audit's default minimum group size).
MIN_GROUP_SIZE = 30
#: Every kind of finding that can go into the exclusion list.
EXCLUDE_KINDS = ("exact-duplicate", "near-duplicate", "leak", "nonface", "outlier", "dark", "washed-out",
                 "label-conflict")
#: Default kinds: findings wrong for any use of the data: extra copies of the same bytes, and the val/test copy
#: of a photo that is also in an earlier split (it inflates held-out accuracy). Everything else is listed for
#: review and kept unless asked for, because the flags fall unevenly on groups: on crop_part1-200px, 79 of the
#: 97 MTCNN non-faces are tight crops of 0-2-year-olds (5.5% of that band, <= 0.7% elsewhere); on UTKFace-64px
#: the colour-histogram outliers are 1.9% of Asian and 1.6% of Black faces but 0.3-0.4% of Indian and Others.
#: Excluding them blindly would thin exactly the groups an audit must see.
DEFAULT_EXCLUDE_KINDS = ("exact-duplicate", "leak")
#: Default output folder.
OUT_DIR = "reports/data"
