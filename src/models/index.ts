export { Ensemble, MLPStacking, NeuralWeightModule, SoftVoting } from "./flannel.ts";
