// Python bindings of the wagi.ops CUDA plugin. The Python wrappers (ops/upfirdn2d.py, ops/bias_act.py)
// validate arguments and provide autograd; these functions compute forward values only.
#include <torch/extension.h>

#include "ops.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "wagi.ops CUDA kernels: upfirdn2d and fused bias + leaky ReLU + gain";
  m.def("upfirdn2d", &upfirdn2d_cuda, "upsample, pad/crop, FIR filter (true convolution), downsample",
        py::arg("x"), py::arg("kernel"), py::arg("upx"), py::arg("upy"), py::arg("downx"), py::arg("downy"),
        py::arg("px0"), py::arg("px1"), py::arg("py0"), py::arg("py1"));
  m.def("bias_act", &bias_act_cuda, "scale * leaky_relu(x + bias, negative_slope), bias along dim 1",
        py::arg("x"), py::arg("bias"), py::arg("negative_slope"), py::arg("scale"));
  m.def("bias_act_grad", &bias_act_grad_cuda, "grad * scale * (out positive ? 1 : negative_slope)",
        py::arg("grad"), py::arg("out"), py::arg("negative_slope"), py::arg("scale"));
}
