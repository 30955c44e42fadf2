"""Model builders: ImageNet and CIFAR ResNets, ResNeXt, plain twins, small MNIST nets."""
