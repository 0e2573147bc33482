"""The names of the map methods, apart from their pytorch-grad-cam classes (:mod:`.cam`): the
server lists and checks them without importing PyTorch, which it loads with the first
explanation."""

METHOD_NAMES = (
    "gradcam",
    "gradcam++",
    "hirescam",
    "xgradcam",
    "layercam",
    "gradcam-elementwise",
    "eigencam",
    "eigengradcam",
    "scorecam",
)
