//! Electronic social security card ride codes (电子社保卡乘车码): ride-code-v1.
