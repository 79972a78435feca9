export { Module, type StateDict, type TensorRecord } from "./module.ts";
export { Dropout, Flatten, Linear, ReLU, Sequential, Tanh } from "./layers.ts";
