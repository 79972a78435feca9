export { Module, type StateDict, type TensorRecord } from "./module.ts";
export { Dropout, Flatten, Linear, ReLU, Sequential, Tanh } from "./layers.ts";
export { AdaptiveAvgPool2d, AvgPool2d, BatchNorm2d, type BatchNorm2dOptions, Conv2d, type Conv2dOptions, MaxPool2d } from "./cnn_layers.ts";
