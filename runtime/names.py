"""One place for names: graph I/O names, dtypes, metadata keys and file-format versions.

Read by ``export`` (when it writes graphs), the engines, the runtime and the tests.
"""

# --- backbone feature graph -------------------------------------------------------------------
BACKBONE_INPUT = "image"  # float32 (N, 3, H, W), RGB, ImageNet-normalised, H and W multiples of 16
BACKBONE_OUTPUT = "patch_features"  # float32 (N, H/8, W/8, D): PatchCore-aggregated patch features
FEATURE_STRIDE = 8

# metadata_props written into every feature ONNX by export, read by runtime.backbone
META_PREFIX = "edge_foct."
META_BACKBONE_ID = META_PREFIX + "backbone_id"  # e.g. "mobilenetv2-12-int8:528+591"
META_FEATURE_DIM = META_PREFIX + "feature_dim"  # D
META_PRETRAINED = META_PREFIX + "pretrained"  # "true" | "false"
META_FORMAT = META_PREFIX + "feature_format"  # FEATURE_FORMAT_VERSION
FEATURE_FORMAT_VERSION = "1"

# --- navigator graph (export/navigator.py) ----------------------------------------------------
NAVIGATOR_INPUT = "sq_diff"  # float32 (P, D): (x - y)^2 for P (memory, query) pairs
NAVIGATOR_OUTPUT = "distance"  # float32 (P, 1)

# --- segmenter graph (export/segmenter.py) ----------------------------------------------------
SEGMENTER_INPUT = "image"  # float32 (1, 3, 1024, 1024), SAM-normalised RGB
SEGMENTER_OUTPUT = "mask"  # float32 (1, 1, 1024, 1024) foreground probability
SEGMENTER_EMBEDDINGS = "image_embeddings"  # float32 (1, 256, 64, 64): encoder graph -> decoder graph

# --- memory bank on disk (runtime/bank.py) ----------------------------------------------------
#: every graph input/output name above (an engine whose library gives a tensor several names picks these)
GRAPH_IO_NAMES = frozenset({BACKBONE_INPUT, BACKBONE_OUTPUT, NAVIGATOR_INPUT, NAVIGATOR_OUTPUT, SEGMENTER_INPUT,
                            SEGMENTER_OUTPUT, SEGMENTER_EMBEDDINGS})

BANK_FORMAT_VERSION = 1
BANK_ARRAYS = "bank.npz"
BANK_MANIFEST = "manifest.json"
EPISODIC_STATE = "episodic.npz"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
