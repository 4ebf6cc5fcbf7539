# test_concurrent_load.py: the original service's 50-user load test, from its
# performance guide, unchanged but for where it sends (OPUSGATE_URL,
# OPUSGATE_API_KEY; the original had http://localhost:5000 and 'your-api-key').
import asyncio
import os
import aiohttp
import time
from pathlib import Path

URL = os.environ.get('OPUSGATE_URL', 'http://localhost:5000/api/v1/translate_audio')
API_KEY = os.environ.get('OPUSGATE_API_KEY', 'your-api-key')

async def upload_audio(session, audio_file, api_key):
    """上传单个音频文件"""
    start_time = time.time()
    
    data = aiohttp.FormData()
    data.add_field('audio_file', 
                   open(audio_file, 'rb'),
                   filename=audio_file.name)
    data.add_field('user_prompt', '请处理这段音频')
    
    headers = {'X-API-Key': api_key}
    
    async with session.post(URL,
                           data=data, headers=headers) as response:
        result = await response.json()
        duration = time.time() - start_time
        return {
            'status': response.status,
            'duration': duration,
            'success': response.status == 200
        }

async def run_load_test(concurrent_users=50):
    """运行负载测试"""
    audio_file = Path('test_audio.opus')  # 准备测试音频文件
    api_key = API_KEY
    
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [
            upload_audio(session, audio_file, api_key)
            for _ in range(concurrent_users)
        ]
        
        start_time = time.time()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        total_time = time.time() - start_time
        
        # 统计结果
        successful = sum(1 for r in results if isinstance(r, dict) and r['success'])
        failed = len(results) - successful
        avg_duration = sum(r['duration'] for r in results if isinstance(r, dict)) / len(results)
        
        print(f"并发用户: {concurrent_users}")
        print(f"总时间: {total_time:.2f}s")
        print(f"成功: {successful}, 失败: {failed}")
        print(f"平均响应时间: {avg_duration:.2f}s")
        print(f"吞吐量: {successful/total_time:.2f} 请求/秒")

if __name__ == '__main__':
    asyncio.run(run_load_test(50))
