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
META_FEATURE_STRIDE = META_PREFIX + "feature_stride"  # input pixels per patch; absent: FEATURE_STRIDE
META_SIDE_DATA = META_PREFIX + "side_data"  # file name (beside the graph) of arrays the methods need

# --- CLIP feature graph for WinCLIP (export/clip_vit.py; runtime/clip_layout.py reads it) --------
# patch_features (N, g, g, D) packs, per patch of the g x g grid: [patch token (P) | image
# embedding (E, the same at every patch) | one window embedding (E) per window size k, the k x k
# window whose top-left patch this is (zeros where that window would leave the grid)].
# The side data (.npz beside the graph) holds the text embeddings and the layout:
CLIP_TEXT_NORMAL = "clip_text_normal"  # (Pn, E) float32 unit rows: normal state x template prompts
CLIP_TEXT_ANOMALOUS = "clip_text_anomalous"  # (Pa, E) float32 unit rows: anomalous prompts
CLIP_LAYOUT = "clip_layout"  # (3,) int64 [grid g, patch dim P, embedding dim E]
CLIP_WINDOWS = "clip_window_sizes"  # (S,) int64 window sizes k, in packing order
CLIP_GRAPH_SHA256 = "clip_graph_sha256"  # () str: the graph these arrays belong to

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
