"""Video clips as data, shared by training and inference: reading and writing clips (with their recipe),
optical flow, scene cuts, captions, scores and curation, and the metrics of generated clips."""
