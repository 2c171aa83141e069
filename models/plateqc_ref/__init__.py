"""The reference the Rust implementation is tested against: `preprocess` (plateqc-psp-v1, stored
values to the model tensor, and CAM resizing) and `cams` (Grad-CAM, Grad-CAM++, LayerCAM from a
layer's activations and gradients). numpy only, so the test environment can import it."""
